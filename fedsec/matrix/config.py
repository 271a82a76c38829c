"""A benchmark matrix: a base experiment, the axes to sweep, the seeds, and published
findings to check on the results.

```yaml
title: "Exp3: defenses against random Byzantine clients"
description: "..."                       # what the matrix reproduces (Markdown)
base: ../default.yaml                    # an experiment config: a path (relative to this
                                         # file) or a shipped config's name
set: {train_args: {comm_round: 20}}      # overrides on the base, by section
seeds: 3                                 # default seeds per cell (fedsec matrix --seeds N)
axes:                                    # every combination of one value per axis is a cell
  attack:
    none: {attack_args: {enable_attack: false}}
    byzantine: {attack_args: {enable_attack: true, attack_type: byzantine, ...}}
  defense:
    fedavg: {defense_args: {enable_defense: false}}
    m-krum: {defense_args: {enable_defense: true, defense_type: krum, ...}}
claims:                                  # published findings, checked on the numbers
  - claim: "m-Krum restores the accuracy lost to random Byzantine clients"
    source: "FedMLSecurity (Han et al.), Exp3"   # who found it
    expected: holds                      # holds | fails: what the source found
    metric: final_test_accuracy
    left: {attack: byzantine, defense: m-krum}
    op: ">="                             # >=, <=, >, <
    right: {attack: none, defense: fedavg}   # a cell, or `value: 0.5`
    margin: -0.03                        # left op right + margin
    note: "why a difference may arise"
```

An axis value's sections are merged into the cell's config key by key, except
``attack_args`` and ``defense_args``, which replace the base's (an attack's parameters do not
carry over to another attack). Seed k sets ``common_args.random_seed: k``. Every cell's config
is checked when the matrix is loaded, before anything runs.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..fl.config import ConfigError, ExperimentConfig, parse_config
from ..fl.runner import resolve_config

METRICS = ("final_test_accuracy", "best_test_accuracy", "final_test_loss",
           "final_backdoor_accuracy", "final_test_perplexity", "attackers_excluded",
           "benign_excluded", "mean_aggregation_time_s", "total_round_time_s")
OPERATORS = (">=", "<=", ">", "<")
REPLACED_SECTIONS = ("attack_args", "defense_args")
KEYS = ("title", "description", "base", "set", "seeds", "axes", "claims")


@dataclass(frozen=True)
class Cell:
    """One combination of axis values, e.g. (("attack", "byzantine"), ("defense", "m-krum"))."""

    choice: tuple[tuple[str, str], ...]
    raw: dict[str, Any]  # the experiment config sections, before the seed

    @property
    def name(self) -> str:
        """A folder name: attack-byzantine__defense-m-krum."""
        return "__".join(f"{_slug(a)}-{_slug(v)}" for a, v in self.choice)

    @property
    def label(self) -> str:
        return " / ".join(v for _, v in self.choice)

    def value(self, axis: str) -> str:
        return dict(self.choice)[axis]

    def config(self, seed: int) -> ExperimentConfig:
        return parse_config(self.raw_with_seed(seed))

    def raw_with_seed(self, seed: int) -> dict[str, Any]:
        common = {**self.raw.get("common_args", {}), "random_seed": seed}
        return {**self.raw, "common_args": common}


@dataclass(frozen=True)
class Claim:
    claim: str
    source: str
    expected_holds: bool
    metric: str
    left: dict[str, str]
    op: str
    right: dict[str, str] | None
    value: float | None
    margin: float
    note: str


@dataclass(frozen=True)
class MatrixConfig:
    name: str
    path: Path
    title: str
    description: str
    seeds: int
    axes: dict[str, dict[str, dict[str, Any]]]
    cells: tuple[Cell, ...]
    claims: tuple[Claim, ...]

    def cell(self, selection: Mapping[str, str]) -> Cell:
        """The one cell with these axis values."""
        found = [c for c in self.cells if all(c.value(a) == v for a, v in selection.items())]
        if len(found) != 1:
            raise ConfigError(f"{self.name}: {dict(selection)} selects {len(found)} cells; "
                              f"name a value for every axis ({', '.join(self.axes)})")
        return found[0]


def load_matrix(path: str | Path) -> MatrixConfig:
    path = resolve_config(str(path))
    raw = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"matrix config {where!r} must be a mapping")
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise ConfigError(f"matrix config {where!r}: unknown key {unknown[0]!r}; valid: "
                          f"{', '.join(KEYS)}")
    if "base" not in raw or "axes" not in raw:
        raise ConfigError(f"matrix config {where!r} needs 'base' (an experiment config) and "
                          f"'axes'")
    base_path = _relative(path, raw["base"])
    base = yaml.safe_load(base_path.read_text()) or {}
    base = merge(base, _mapping(where, "set", raw.get("set", {})))
    axes = _axes(where, raw["axes"])
    seeds = raw.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"matrix config {where!r}: seeds={seeds!r} must be an integer >= 1")
    cells = []
    for combo in itertools.product(*[[(a, v) for v in values] for a, values in axes.items()]):
        body = base
        for axis, value in combo:
            body = merge(body, axes[axis][value])
        cell = Cell(tuple(combo), body)
        try:
            cell.config(0)
        except ConfigError as exc:
            raise ConfigError(f"matrix config {where!r}, cell {cell.label}: {exc}") from None
        cells.append(cell)
    matrix = MatrixConfig(path.stem, path, str(raw.get("title", path.stem)),
                          str(raw.get("description", "")), seeds, axes, tuple(cells), ())
    claims = tuple(_claim(where, i, c, matrix) for i, c in enumerate(raw.get("claims") or []))
    return dataclasses.replace(matrix, claims=claims)


def merge(base: Mapping, update: Mapping) -> dict[str, Any]:
    """``base`` with ``update``'s sections merged key by key (attack_args / defense_args
    replaced whole)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for section, body in update.items():
        if section in REPLACED_SECTIONS or not isinstance(body, Mapping):
            out[section] = dict(body) if isinstance(body, Mapping) else body
        else:
            out[section] = {**out.get(section, {}), **body}
    return out


def _relative(path: Path, base: Any) -> Path:
    if not isinstance(base, str):
        raise ConfigError(f"matrix config {str(path)!r}: base must be a path or config name; "
                          f"got {base!r}")
    candidate = path.parent / base
    return candidate if candidate.is_file() else resolve_config(base)


def _mapping(where: str, key: str, value: Any) -> Mapping:
    if not isinstance(value, Mapping):
        raise ConfigError(f"matrix config {where!r}: {key} must be a mapping; got {value!r}")
    return value


def _axes(where: str, raw: Any) -> dict[str, dict[str, dict[str, Any]]]:
    axes = _mapping(where, "axes", raw)
    if not axes:
        raise ConfigError(f"matrix config {where!r}: axes is empty")
    out = {}
    for axis, values in axes.items():
        values = _mapping(where, f"axes.{axis}", values)
        if not values:
            raise ConfigError(f"matrix config {where!r}: axis {axis!r} has no values")
        out[str(axis)] = {str(v): dict(_mapping(where, f"axes.{axis}.{v}", body or {}))
                          for v, body in values.items()}
    return out


def _claim(where: str, index: int, raw: Any, matrix: MatrixConfig) -> Claim:
    at = f"matrix config {where!r}, claims[{index}]"
    raw = _mapping(where, f"claims[{index}]", raw)
    valid = ("claim", "source", "expected", "metric", "left", "op", "right", "value", "margin",
             "note")
    unknown = [k for k in raw if k not in valid]
    if unknown:
        raise ConfigError(f"{at}: unknown key {unknown[0]!r}; valid: {', '.join(valid)}")
    if raw.get("expected") not in ("holds", "fails"):
        raise ConfigError(f"{at}: expected={raw.get('expected')!r} must be 'holds' or 'fails'")
    if not isinstance(raw.get("source"), str) or not raw["source"]:
        raise ConfigError(f"{at}: source (who found it, e.g. 'FedMLSecurity, Exp3') is "
                          f"missing")
    if raw.get("metric") not in METRICS:
        raise ConfigError(f"{at}: metric={raw.get('metric')!r} is not valid; valid: "
                          f"{', '.join(METRICS)}")
    if raw.get("op") not in OPERATORS:
        raise ConfigError(f"{at}: op={raw.get('op')!r} is not valid; valid: "
                          f"{', '.join(OPERATORS)}")
    if ("right" in raw) == ("value" in raw):
        raise ConfigError(f"{at}: give exactly one of 'right' (a cell) and 'value'")
    left = {str(k): str(v) for k, v in _mapping(where, "left", raw.get("left")).items()}
    right = ({str(k): str(v) for k, v in _mapping(where, "right", raw["right"]).items()}
             if "right" in raw else None)
    for selection in (left, right):
        if selection is not None:
            matrix.cell(selection)  # exactly one cell, or a clear error
    return Claim(str(raw.get("claim", "")), raw["source"], raw["expected"] == "holds",
                 raw["metric"], left,
                 raw["op"], right, float(raw["value"]) if "value" in raw else None,
                 float(raw.get("margin", 0.0)), str(raw.get("note", "")))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"
