"""The numbers of a finished matrix: per seed from each run's summary, records and config, per
cell as mean and standard deviation over its seeds."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from ..fl.run_dir import CONFIG, RunDir
from ..security.detection import RUN_METRICS, mean_over_rounds
from ..security.metrics import EXCLUDED_KEY, MALICIOUS_KEY
from .config import Cell


@dataclass(frozen=True)
class SeedResult:
    seed: int
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    config: dict[str, Any] | None = None  # the run's resolved config.yaml, when read from disk

    @classmethod
    def read(cls, seed: int, run_dir: RunDir) -> "SeedResult":
        summary = json.loads(run_dir.file("summary.json").read_text())
        config = yaml.safe_load(run_dir.file(CONFIG).read_text())
        return cls(seed, summary, run_dir.records(), config)

    def metric(self, name: str) -> float | None:
        """A summary number, or one computed from the records:
        ``attackers_excluded``: of the malicious clients' participations, the fraction the
        defense excluded (None without attackers); ``benign_excluded``: the same for the benign
        clients (the defense's false positives); ``detection_precision`` / ``_recall`` /
        ``_fpr``: the round's detection ratio (fedsec.security.detection) averaged over the
        rounds that define it."""
        if name in ("attackers_excluded", "benign_excluded"):
            return self._exclusion(name == "attackers_excluded")
        if name in RUN_METRICS:
            return mean_over_rounds(self.records, RUN_METRICS[name])
        value = self.summary.get(name)
        return float(value) if isinstance(value, (int, float)) else None

    def _exclusion(self, attackers: bool) -> float | None:
        hit = total = 0
        for r in self.records:
            bad = set(r.get(MALICIOUS_KEY, []))
            group = bad if attackers else set(r.get("clients", [])) - bad
            hit += len(group & set(r.get(EXCLUDED_KEY, [])))
            total += len(group)
        return hit / total if total else None


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    seeds: tuple[SeedResult, ...]

    def stale(self) -> list[str]:
        """Seeds whose run differs from this cell at a key the matrix sets (a run left from an
        earlier version of the matrix config), as 'seed k: section.key is X, the matrix says
        Y'. Keys the matrix leaves to defaults are not compared: a newer fedsec may spell
        out more of them, or change a default."""
        out = []
        for s in self.seeds:
            if s.config is None:
                continue
            resolved = self.cell.config(s.seed).to_dict()  # names as a run stores them
            for section, body in self.cell.raw_with_seed(s.seed).items():
                stored, wanted = s.config.get(section) or {}, resolved.get(section) or {}
                differ = [k for k in (body if isinstance(body, dict) else {})
                          if stored.get(k) != wanted.get(k, body[k])]
                if differ:
                    key = differ[0]
                    out.append(f"seed {s.seed}: {section}.{key} is {stored.get(key)!r}, the "
                               f"matrix says {wanted.get(key, body[key])!r}")
                    break
        return out

    def stats(self, metric: str) -> tuple[float, float, int] | None:
        """(mean, sample std (0 for one seed), seeds) of ``metric``; None when no seed has it."""
        values = [v for v in (s.metric(metric) for s in self.seeds) if v is not None]
        if not values:
            return None
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return float(np.mean(values)), std, len(values)

    def curve(self, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rounds (1-based) where every seed has ``metric``, and its mean and std there."""
        per_seed = [{r["round"] + 1: r[metric] for r in s.records
                     if isinstance(r.get(metric), (int, float))} for s in self.seeds]
        rounds = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
        values = np.array([[d[x] for x in rounds] for d in per_seed], dtype=float)
        if not rounds:
            return np.array([]), np.array([]), np.array([])
        std = values.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(len(rounds))
        return np.array(rounds), values.mean(axis=0), std
