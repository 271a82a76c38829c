"""Curves of runs, one line per run, as the FedMLSecurity paper's Figures 4-9 (test accuracy
per round under no attack / attack / attack + defense)."""
from __future__ import annotations

import os
from pathlib import Path

from .run_dir import RunDir

METRIC_LABELS = {"test_accuracy": "test accuracy", "test_loss": "test loss",
                 "backdoor_accuracy": "backdoor success rate", "train_loss": "train loss",
                 "test_perplexity": "test perplexity", "aggregation_time_s": "aggregation time (s)"}


def run_label(run_dir: RunDir) -> str:
    """"attack + defense" from the run's config, e.g. "byzantine + krum"; an undefended run is
    labelled by its federated optimizer ("no attack + FedAvg")."""
    config = run_dir.config()
    attack = config.get("attack_args", {})
    defense = config.get("defense_args", {})
    aggregation = (_defense_name(defense) if defense.get("enable_defense")
                   else config.get("train_args", {}).get("federated_optimizer", "FedAvg"))
    return f"{attack['attack_type'] if attack.get('enable_attack') else 'no attack'} + " \
           f"{aggregation}"


def _defense_name(defense: dict) -> str:
    """``defense_type``, a chain's members as "[a, b]"."""
    name = defense["defense_type"]
    return f"[{', '.join(name)}]" if isinstance(name, list) else name


def run_title(run_dir: RunDir) -> str:
    """What ran, on two lines: attack (and its attackers), defense, federation, model and data."""
    config = run_dir.config()
    attack = config.get("attack_args", {})
    train = config.get("train_args", {})
    defense = config.get("defense_args", {})
    attackers = next((attack[k] for k in ("byzantine_client_num", "poisoned_client_num")
                      if attack.get(k) is not None), None)
    if attack.get("enable_attack"):
        what = f"attack: {attack['attack_type']}" + (
            f" ({attackers} attacker{'s' if attackers != 1 else ''} per round)"
            if attackers is not None else "")
    else:
        what = "no attack"
    what += "; defense: " + (_defense_name(defense) if defense.get("enable_defense")
                             else f"none ({train.get('federated_optimizer', 'FedAvg')})")
    return (f"{what}\n{train.get('client_num_per_round')} of {train.get('client_num_in_total')} "
            f"clients per round, {config.get('model_args', {}).get('model')} on "
            f"{config.get('data_args', {}).get('dataset')}")


def plot_runs(paths: list[str | os.PathLike], out: str | os.PathLike,
              metric: str = "test_accuracy", labels: list[str] | None = None,
              title: str | None = None) -> Path:
    """One PNG with ``metric`` per round of every run directory in ``paths``; a single run's
    figure is titled with what ran unless ``title`` is given."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = [RunDir(p) for p in paths]
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    names = labels or [run_label(r) for r in runs]
    if len(set(names)) < len(names):  # same setting twice: tell them apart by folder
        names = [f"{n} ({r.path.name})" for n, r in zip(names, runs)]
    curves = [[(r["round"] + 1, r[metric]) for r in run.records()
               if isinstance(r.get(metric), (int, float))] for run in runs]
    if not any(curves):
        found = sorted({k for run in runs for r in run.records() for k, v in r.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)
                        and k != "round"})
        raise ValueError(f"no round of {', '.join(str(r.path) for r in runs)} has metric "
                         f"{metric!r}; metrics in the records: {', '.join(found) or 'none'}")
    if title is None and len(runs) == 1:
        title = run_title(runs[0])
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for points, name in zip(curves, names):
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
