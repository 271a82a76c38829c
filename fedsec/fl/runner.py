"""`fedsec run`: an experiment into its run directory, with a progress bar, resumable."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from ..security.metrics import EXCLUDED_KEY
from .config import ExperimentConfig
from .durability import backdoor_durability
from .experiment import Experiment
from .plot import plot_runs
from .run_dir import PLOT, RunDir


def run_experiment(config: ExperimentConfig, out: str | os.PathLike, *, resume: bool = False,
                   overwrite: bool = False, progress: bool = True, plot: bool = True,
                   on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``config`` into ``out`` (or continue it there with ``resume``); returns the summary
    (also written to summary.json), and with ``plot`` the run's figure. ``on_round`` sees each
    record once it is on disk. The
    directory is locked for the whole run; nothing is written to it before the model and the
    data are built, so a config that fails leaves it as it was."""
    run_dir = RunDir(out)
    settings = config.to_dict()
    run_dir.check(settings, resume=resume, overwrite=overwrite)  # refuse before loading data
    experiment = Experiment(config)
    with run_dir.lock():
        checkpoint = run_dir.open(settings, resume=resume, overwrite=overwrite)
        if checkpoint is not None:
            experiment.load_state_dict(checkpoint)
        total = config.train.comm_round
        with tqdm(total=total, initial=experiment.round, desc=run_dir.path.name, unit="round",
                  disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
            for record in experiment.rounds():
                run_dir.save_round(experiment.state_dict(), record)
                bar.set_postfix_str(progress_text(record))
                bar.update(1)
                if on_round is not None:
                    on_round(record)
        summary = summarize(config, run_dir.records())
        run_dir.write_summary(summary)
        if plot:
            plot_runs([run_dir.path], run_dir.file(PLOT))
    return summary


def summarize(config: ExperimentConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's final numbers: last and best test accuracy, backdoor success and how long it
    lasted after the attack stopped, times."""
    tested = [r for r in records if "test_accuracy" in r]
    last = tested[-1] if tested else {}
    agg = [r["aggregation_time_s"] for r in records if "aggregation_time_s" in r]
    out: dict[str, Any] = {
        "rounds": len(records),
        "attack": config.attack.name if config.attack else None,
        "defense": config.defense.name if config.defense else None,  # a chain: its members
        "final_test_accuracy": last.get("test_accuracy"),
        "final_test_loss": last.get("test_loss"),
        "best_test_accuracy": max((r["test_accuracy"] for r in tested), default=None),
        "mean_aggregation_time_s": sum(agg) / len(agg) if agg else None,
        "total_round_time_s": sum(r.get("round_time_s", 0.0) for r in records),
        "rounds_with_exclusions": sum(1 for r in records if r.get(EXCLUDED_KEY)),
    }
    if "backdoor_accuracy" in last:
        out["final_backdoor_accuracy"] = last["backdoor_accuracy"]
        end = getattr(config.attack.params, "attack_end_round", None)
        out.update(backdoor_durability(records, end))
    if "test_perplexity" in last:
        out["final_test_perplexity"] = last["test_perplexity"]
    return out


def progress_text(record: dict[str, Any]) -> str:
    parts = []
    for key, label in (("test_accuracy", "acc"), ("test_loss", "loss"),
                       ("backdoor_accuracy", "backdoor")):
        value = record.get(key)
        if isinstance(value, float) and math.isfinite(value):
            parts.append(f"{label}={value:.4f}")
    excluded = record.get(EXCLUDED_KEY)
    if excluded:
        parts.append(f"excluded={len(excluded)}")
    return " ".join(parts)


def resolve_config(name: str) -> Path:
    """A config file: the path as given, else a shipped config by name (``default``,
    ``paper/exp3_byzantine``), from the installed package or the source checkout."""
    path = Path(name)
    if path.exists():
        return path
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "configs", package.parent / "configs"):
        for candidate in (folder / name, folder / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"config {name!r} is neither a file nor a shipped config (e.g. "
                            f"'default'); shipped configs live in {package / 'configs'}")
