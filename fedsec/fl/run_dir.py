"""A run's output directory, written so that nothing is lost when a run is killed:

    config.yaml     the resolved config (every default spelled out)
    metrics.jsonl   one JSON record per completed round, appended as the round ends
    checkpoint.pt   the state after the last completed round (replaced atomically)
    summary.json    the final summary, once the last round is done
    accuracy.png    test accuracy per round

After round r the checkpoint (which carries round r's record too) is written first, then the
record is appended. A run killed in between resumes from the checkpoint and appends the
record it holds, so a finished round's result is never recomputed nor rewritten; a record
cut off mid-line by the kill is dropped and restored from the checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
PLOT = "accuracy.png"
FILES = (CONFIG, METRICS, CHECKPOINT, SUMMARY, PLOT)


class RunDirError(ValueError):
    """The output directory cannot be used as asked (the message says what to do)."""


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def holds_run(self) -> bool:
        return self.file(CONFIG).exists()

    def open(self, config: dict[str, Any], *, resume: bool, overwrite: bool
             ) -> dict[str, Any] | None:
        """Prepare the directory for a run of ``config`` (its ``to_dict()``); returns the
        checkpoint to continue from (None: start at round 0)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"output path {str(self.path)!r} exists and is not a directory")
        if self.holds_run() and overwrite:
            for name in FILES:
                self.file(name).unlink(missing_ok=True)
        elif self.holds_run() and not resume:
            done = len(self.records())
            raise RunDirError(f"{str(self.path)!r} already holds a run ({done} rounds done); "
                              f"pass --resume to continue it, --overwrite to start again, or "
                              f"choose another --out")
        if not self.holds_run():
            self.path.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(self.file(CONFIG), yaml.safe_dump(config, sort_keys=False))
            return None
        stored = yaml.safe_load(self.file(CONFIG).read_text())
        if stored != config:
            raise RunDirError(f"cannot resume {str(self.path)!r}: the config differs from its "
                              f"config.yaml at {_first_difference(stored, config)}")
        return self._reconcile()

    def _reconcile(self) -> dict[str, Any] | None:
        checkpoint = self.load_checkpoint()
        records = self.records(drop_torn=True)
        done = -1 if checkpoint is None else checkpoint["round"]
        if records and records[-1]["round"] > done:
            raise RunDirError(f"{str(self.file(METRICS))!r} has round {records[-1]['round']} "
                              f"but the checkpoint only round {done}: the files were not "
                              f"written by fedsec in this order")
        if checkpoint is not None and (not records or records[-1]["round"] < done):
            self._append(checkpoint["record"])
        return checkpoint

    def records(self, *, drop_torn: bool = False) -> list[dict[str, Any]]:
        """The completed rounds' records; with ``drop_torn``, a last line cut off by a kill is
        removed from the file."""
        path = self.file(METRICS)
        if not path.exists():
            return []
        lines = path.read_text().splitlines(keepends=True)
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines) - 1:
                    raise RunDirError(f"{str(path)!r} line {i + 1} is not JSON") from None
                if drop_torn:
                    with path.open("r+") as f:
                        f.truncate(sum(len(x.encode()) for x in lines[:i]))
        return out

    def load_checkpoint(self) -> dict[str, Any] | None:
        path = self.file(CHECKPOINT)
        return torch.load(path, weights_only=True) if path.exists() else None

    def save_round(self, checkpoint: dict[str, Any], record: dict[str, Any]) -> None:
        """Persist a finished round: the checkpoint (holding ``record``), then the record."""
        tmp = self.file(CHECKPOINT + ".tmp")
        torch.save({**checkpoint, "record": record}, tmp)
        os.replace(tmp, self.file(CHECKPOINT))
        self._append(record)

    def _append(self, record: dict[str, Any]) -> None:
        with self.file(METRICS).open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_summary(self, summary: dict[str, Any]) -> None:
        _atomic_write_text(self.file(SUMMARY), json.dumps(summary, indent=2) + "\n")

    def config(self) -> dict[str, Any]:
        if not self.holds_run():
            raise RunDirError(f"{str(self.path)!r} holds no fedsec run (no {CONFIG})")
        return yaml.safe_load(self.file(CONFIG).read_text())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key, "<missing>") != b.get(key, "<missing>"):
                return _first_difference(a.get(key, "<missing>"), b.get(key, "<missing>"),
                                         f"{where}.{key}" if where else str(key))
    return f"{where}: {a!r} in the run, {b!r} now"
