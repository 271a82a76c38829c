"""A benchmark matrix: a base experiment, the axes to sweep, the seeds, the paper's setting
beside the one run here, and published findings to check on the results.

```yaml
title: "Exp3: defenses against random Byzantine clients"
description: "..."                       # what the matrix reproduces (Markdown)
base: ../default.yaml                    # an experiment config: a path (relative to this
                                         # file) or a shipped config's name
extends: exp3_byzantine.yaml             # optional: another matrix whose keys this one
                                         # fills in (set merged by section, setting by row,
                                         # the rest replaced): the same claims on a stand-in
set: {train_args: {comm_round: 20}}      # overrides on the base, by section
seeds: 5                                 # default seeds per cell (fedsec matrix --seeds N)
level: 0.95                              # confidence level of every claim's interval
setting:                                 # the source's setting beside this one (the report
  dataset: {paper: CIFAR-10, here: digits, why: "CIFAR-10 is not shipped"}   # opens with it)
  model: {paper: ResNet-20, here: logistic regression, why: "..."}
  clients: {paper: 10, here: 10}         # `why` is needed where the two differ
  malicious: {paper: 1, here: 1}
  m: {paper: 5, here: 5}
  rounds: {paper: not stated, here: 20, why: "..."}
axes:                                    # every combination of one value per axis is a cell
  attack:
    none: {attack_args: {enable_attack: false}}
    byzantine: {attack_args: {enable_attack: true, attack_type: byzantine, ...}}
  defense:
    fedavg: {defense_args: {enable_defense: false}}
    m-krum: {defense_args: {enable_defense: true, defense_type: krum, ...}}
claims:                                  # published findings, checked on the numbers
  - claim: "m-Krum neutralizes a random Byzantine client"
    source: "FedMLSecurity (Han et al.), Exp3, Section 5.1"   # who found it, and where
    quote: "For high-impact attacks, ... Krum exhibits resilience, ..."   # the sentence tested
    expected: holds                      # holds | fails: what the source found
    metric: final_test_accuracy
    left: {attack: byzantine, defense: m-krum}
    op: ">="                             # >=, <=, >, <, or ~= (within +- margin)
    right: {attack: none, defense: fedavg}   # a cell, or `value: 0.5`
    margin: -0.02                        # the claim: left - right op margin
    level: 0.95                          # optional: this claim's own interval level
    note: "why a difference may arise"   # shown in the report whatever the verdict
untestable:                              # the source's findings this matrix cannot test
  - source: "FedMLSecurity (Han et al.), Exp6, Section 5.1"
    quote: "..."                         # the sentence, as for a claim
    why: "ResNet-56 on CIFAR-100 takes many hours a run on this CPU"
heatmaps:                                # optional, for two-axis matrices too large for
  rows: defense                          # per-round curves: each metric as a grid, one axis
  columns: attack                        # down and one across, in the report and as figures
  metrics: [final_test_accuracy, final_backdoor_accuracy]   # columns of the table (table.py)
```

An axis value's sections are merged into the cell's config key by key, except
``attack_args`` and ``defense_args``, which replace the base's (an attack's parameters do not
carry over to another attack). Seed k sets ``common_args.random_seed: k``. Every cell's config
is checked when the matrix is loaded, before anything runs. A claim sourced to FedMLSecurity
quotes its sentence and names its experiment and section.
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
from ..security.detection import RUN_METRICS

METRICS = ("final_test_accuracy", "best_test_accuracy", "final_test_loss",
           "final_backdoor_accuracy", "final_test_perplexity", "attackers_excluded",
           "benign_excluded", *RUN_METRICS, "mean_aggregation_time_s", "total_round_time_s")
OPERATORS = (">=", "<=", ">", "<", "~=")
REPLACED_SECTIONS = ("attack_args", "defense_args")
KEYS = ("title", "description", "extends", "base", "set", "seeds", "level", "setting", "axes",
        "claims", "untestable", "heatmaps")
UNTESTABLE_KEYS = ("source", "quote", "why")
HEATMAP_KEYS = ("rows", "columns", "metrics")
CLAIM_KEYS = ("claim", "source", "quote", "expected", "metric", "left", "op", "right", "value",
              "margin", "level", "note")
DEFAULT_LEVEL = 0.95
# The rows every setting table has: where a stand-in may differ from the paper.
SETTING_ROWS = ("dataset", "model", "clients", "malicious", "m", "rounds")
SETTING_KEYS = ("paper", "here", "why")
PAPER = "FedMLSecurity"  # claims sourced to it quote the sentence they test


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
    """A finding tested as ``left - right op margin`` (``right``: a cell, else ``value``) on
    the interval of that difference at ``level``; ``~=`` is ``|left - right| <= margin``."""

    claim: str
    source: str
    quote: str
    expected_holds: bool
    metric: str
    left: dict[str, str]
    op: str
    right: dict[str, str] | None
    value: float | None
    margin: float
    level: float
    note: str


@dataclass(frozen=True)
class SettingRow:
    """One row of the stand-in table: the source's value, this matrix's, and why they differ."""

    name: str
    paper: str
    here: str
    why: str


@dataclass(frozen=True)
class Untestable:
    """A finding of the source that this matrix cannot test, and why."""

    source: str
    quote: str
    why: str


@dataclass(frozen=True)
class Heatmaps:
    """Grids of a two-axis matrix: ``rows`` down, ``columns`` across, one per metric."""

    rows: str
    columns: str
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class MatrixConfig:
    name: str
    path: Path
    title: str
    description: str
    seeds: int
    level: float
    setting: tuple[SettingRow, ...]
    axes: dict[str, dict[str, dict[str, Any]]]
    cells: tuple[Cell, ...]
    claims: tuple[Claim, ...]
    untestable: tuple[Untestable, ...] = ()
    heatmaps: Heatmaps | None = None
    extends: str | None = None  # the name of the matrix this one reruns on another stand-in

    def cell(self, selection: Mapping[str, str]) -> Cell:
        """The one cell with these axis values."""
        found = [c for c in self.cells if all(c.value(a) == v for a, v in selection.items())]
        if len(found) != 1:
            raise ConfigError(f"{self.name}: {dict(selection)} selects {len(found)} cells; "
                              f"name a value for every axis ({', '.join(self.axes)})")
        return found[0]


def load_matrix(path: str | Path) -> MatrixConfig:
    path = resolve_config(str(path))
    raw = _read_matrix(path, ())
    where = str(path)
    if "base" not in raw or "axes" not in raw:
        raise ConfigError(f"matrix config {where!r} needs 'base' (an experiment config) and "
                          f"'axes'")
    base = yaml.safe_load(Path(raw["base"]).read_text()) or {}
    base = merge(base, _mapping(where, "set", raw.get("set", {})))
    axes = _axes(where, raw["axes"])
    seeds = raw.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"matrix config {where!r}: seeds={seeds!r} must be an integer >= 1")
    level = _level(f"matrix config {where!r}", "level", raw.get("level", DEFAULT_LEVEL))
    setting = _setting(where, raw.get("setting", {}))
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
                          str(raw.get("description", "")), seeds, level, setting, axes,
                          tuple(cells), (), _untestable(where, raw.get("untestable") or []),
                          _heatmaps(where, raw.get("heatmaps"), axes), raw.get("extends_name"))
    claims = tuple(_claim(where, i, c, matrix) for i, c in enumerate(raw.get("claims") or []))
    return dataclasses.replace(matrix, claims=claims)


def _read_matrix(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The matrix's keys, those of the matrix it ``extends`` filled in (``set`` merged by
    section, ``setting`` by row, every other key replaced), ``base`` as a resolved path."""
    where = str(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"matrix config {where!r} must be a mapping")
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise ConfigError(f"matrix config {where!r}: unknown key {unknown[0]!r}; valid: "
                          f"{', '.join(KEYS)}")
    raw = dict(raw)
    if "base" in raw:
        raw["base"] = str(_relative(path, raw["base"]))
    if "extends" not in raw:
        return raw
    parent_path = _relative(path, raw.pop("extends"), "extends")
    raw["extends_name"] = parent_path.stem
    if parent_path.resolve() in seen:
        raise ConfigError(f"matrix config {where!r}: extends {str(parent_path)!r}, which "
                          f"extends it back")
    parent = _read_matrix(parent_path, (*seen, path.resolve()))
    out = {**parent, **raw}
    out["set"] = merge(_mapping(where, "set", parent.get("set", {})),
                       _mapping(where, "set", raw.get("set", {})))
    out["setting"] = {**_mapping(where, "setting", parent.get("setting", {})),
                      **_mapping(where, "setting", raw.get("setting", {}))}
    return out


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


def _relative(path: Path, base: Any, key: str = "base") -> Path:
    if not isinstance(base, str):
        raise ConfigError(f"matrix config {str(path)!r}: {key} must be a path or config name; "
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


def _level(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{where}: {key}={value!r} must be a confidence level between 0 and "
                          f"1 (e.g. 0.95)")
    return float(value)


def _setting(where: str, raw: Any) -> tuple[SettingRow, ...]:
    """The stand-in table: every row of SETTING_ROWS once the block is given, extra rows after."""
    rows = _mapping(where, "setting", raw)
    if not rows:
        return ()
    missing = [r for r in SETTING_ROWS if r not in rows]
    if missing:
        raise ConfigError(f"matrix config {where!r}: setting lacks row {missing[0]!r}; it needs "
                          f"{', '.join(SETTING_ROWS)}")
    out = []
    for name in [*SETTING_ROWS, *(r for r in rows if r not in SETTING_ROWS)]:
        at = f"setting.{name}"
        row = _mapping(where, at, rows[name])
        unknown = [k for k in row if k not in SETTING_KEYS]
        if unknown:
            raise ConfigError(f"matrix config {where!r}: {at} has unknown key {unknown[0]!r}; "
                              f"valid: {', '.join(SETTING_KEYS)}")
        for key in SETTING_KEYS:
            value = row.get(key)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (str, int, float))):
                raise ConfigError(f"matrix config {where!r}: {at}.{key}={value!r} must be text "
                                  f"or a number")
        if row.get("paper") is None or row.get("here") is None:
            raise ConfigError(f"matrix config {where!r}: {at} needs 'paper' (the source's "
                              f"value) and 'here' (this matrix's)")
        paper, here, why = str(row["paper"]), str(row["here"]), str(row.get("why") or "")
        if paper != here and not why:
            raise ConfigError(f"matrix config {where!r}: {at}: paper={paper!r} and "
                              f"here={here!r} differ; say why (why: ...)")
        out.append(SettingRow(str(name), paper, here, why))
    return tuple(out)


def _claim(where: str, index: int, raw: Any, matrix: MatrixConfig) -> Claim:
    at = f"matrix config {where!r}, claims[{index}]"
    raw = _mapping(where, f"claims[{index}]", raw)
    unknown = [k for k in raw if k not in CLAIM_KEYS]
    if unknown:
        raise ConfigError(f"{at}: unknown key {unknown[0]!r}; valid: {', '.join(CLAIM_KEYS)}")
    if raw.get("expected") not in ("holds", "fails"):
        raise ConfigError(f"{at}: expected={raw.get('expected')!r} must be 'holds' or 'fails'")
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{at}: source (who found it, e.g. 'FedMLSecurity, Exp3') is "
                          f"missing")
    quote = raw.get("quote")
    if quote is not None and (not isinstance(quote, str) or not quote.strip()):
        raise ConfigError(f"{at}: quote={quote!r} must be the source's sentence, as text")
    if PAPER in source:
        if quote is None:
            raise ConfigError(f"{at}: source={source!r} is {PAPER}; quote the sentence the "
                              f"claim tests (quote: ...)")
        if not re.search(r"\bExp ?\d+\b", source) or \
                not re.search(r"\b(Section \d+(\.\d+)*|Appendix [A-Z])\b", source):
            raise ConfigError(f"{at}: source={source!r} must name the experiment and the "
                              f"section, e.g. '{PAPER} (Han et al.), Exp3, Section 5.1'")
    if raw.get("metric") not in METRICS:
        raise ConfigError(f"{at}: metric={raw.get('metric')!r} is not valid; valid: "
                          f"{', '.join(METRICS)}")
    if raw.get("op") not in OPERATORS:
        raise ConfigError(f"{at}: op={raw.get('op')!r} is not valid; valid: "
                          f"{', '.join(OPERATORS)}")
    if ("right" in raw) == ("value" in raw):
        raise ConfigError(f"{at}: give exactly one of 'right' (a cell) and 'value'")
    for key in ("value", "margin"):
        number = raw.get(key, 0.0)
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{at}: {key}={number!r} must be a number")
    margin = float(raw.get("margin", 0.0))
    if raw["op"] == "~=" and margin <= 0:
        raise ConfigError(f"{at}: op '~=' needs margin > 0 (the tolerance of |left - "
                          f"right|); got margin={margin!r}")
    left = {str(k): str(v) for k, v in _mapping(where, "left", raw.get("left")).items()}
    right = ({str(k): str(v) for k, v in _mapping(where, "right", raw["right"]).items()}
             if "right" in raw else None)
    for selection in (left, right):
        if selection is not None:
            matrix.cell(selection)  # exactly one cell, or a clear error
    level = _level(at, "level", raw["level"]) if "level" in raw else matrix.level
    return Claim(str(raw.get("claim", "")), source, " ".join(str(quote or "").split()),
                 raw["expected"] == "holds", raw["metric"], left, raw["op"], right,
                 float(raw["value"]) if "value" in raw else None, margin, level,
                 str(raw.get("note", "")))


def _untestable(where: str, raw: Any) -> tuple[Untestable, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"matrix config {where!r}: untestable must be a list of "
                          f"{{source, quote, why}}; got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        item = _mapping(where, f"untestable[{i}]", item)
        unknown = [k for k in item if k not in UNTESTABLE_KEYS]
        missing = [k for k in UNTESTABLE_KEYS if not isinstance(item.get(k), str)
                   or not item[k].strip()]
        if unknown or missing:
            raise ConfigError(f"matrix config {where!r}: untestable[{i}] "
                              + (f"has unknown key {unknown[0]!r}" if unknown
                                 else f"needs {missing[0]!r} as text")
                              + f"; keys: {', '.join(UNTESTABLE_KEYS)}")
        out.append(Untestable(*(" ".join(item[k].split()) for k in UNTESTABLE_KEYS)))
    return tuple(out)


def _heatmaps(where: str, raw: Any, axes: Mapping[str, Any]) -> Heatmaps | None:
    if raw is None:
        return None
    from .table import COLUMNS  # here: table.py reads results.py, which needs this module
    raw = _mapping(where, "heatmaps", raw)
    unknown = [k for k in raw if k not in HEATMAP_KEYS]
    if unknown:
        raise ConfigError(f"matrix config {where!r}: heatmaps has unknown key {unknown[0]!r}; "
                          f"valid: {', '.join(HEATMAP_KEYS)}")
    rows, columns = raw.get("rows"), raw.get("columns")
    if len(axes) != 2 or {rows, columns} != set(axes):
        raise ConfigError(f"matrix config {where!r}: heatmaps needs a two-axis matrix and "
                          f"rows / columns naming its two axes ({', '.join(axes)}); got "
                          f"rows={rows!r}, columns={columns!r}")
    metrics = raw.get("metrics")
    valid = [c.metric for c in COLUMNS]
    if not isinstance(metrics, list) or not metrics or any(m not in valid for m in metrics):
        raise ConfigError(f"matrix config {where!r}: heatmaps.metrics={metrics!r} must be a "
                          f"list of table metrics: {', '.join(valid)}")
    return Heatmaps(rows, columns, tuple(metrics))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"
