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
    """"attack + defense" from the run's config, e.g. "byzantine + krum", "no attack"."""
    config = run_dir.config()
    attack = config.get("attack_args", {})
    defense = config.get("defense_args", {})
    parts = [attack["attack_type"] if attack.get("enable_attack") else "no attack"]
    if defense.get("enable_defense"):
        parts.append(defense["defense_type"])
    return " + ".join(parts)


def plot_runs(paths: list[str | os.PathLike], out: str | os.PathLike,
              metric: str = "test_accuracy", labels: list[str] | None = None,
              title: str | None = None) -> Path:
    """One PNG with ``metric`` per round of every run directory in ``paths``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [RunDir(p) for p in paths]
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    names = labels or [run_label(r) for r in runs]
    if len(set(names)) < len(names):  # same setting twice: tell them apart by folder
        names = [f"{n} ({r.path.name})" for n, r in zip(names, runs)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for run, name in zip(runs, names):
        points = [(r["round"] + 1, r[metric]) for r in run.records()
                  if isinstance(r.get(metric), (int, float))]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
    ax.set_xlabel("round")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
