"""A matrix's report directory: table.md / table.csv, the figures, each cell's resolved config,
and report.md tying them together: the paper's setting beside this one, the results, and
published findings checked (claims.py). Every number in it comes from the runs."""
from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
from pathlib import Path

import torch
import yaml

from .. import __version__
from .claims import METHOD, Verdict, check_claims
from .config import MatrixConfig
from .figures import plot_matrix
from .heatmap import MARK, grids, markdown_grid, plot_grid
from .results import CellResult
from .table import csv_table, markdown_table, seeds_csv

FIGURES = (("test_accuracy", "accuracy.png", "Test accuracy per round"),
           ("backdoor_accuracy", "backdoor.png", "Backdoor success rate per round"),
           ("test_perplexity", "perplexity.png", "Test perplexity per round"))
ONE_SEED = "one seed: no spread to judge by"


def write_report(matrix: MatrixConfig, results: list[CellResult], out: Path, seeds: int
                 ) -> Path:
    stale = [f"cell {r.cell.label}, {line}" for r in results for line in r.stale()]
    if stale:
        raise ValueError(f"{len(stale)} run(s) under {str(out / 'cells')!r} were made with "
                         f"another version of the matrix config ({stale[0]}); delete those "
                         f"runs (or the whole folder) and run the matrix again")
    axes = list(matrix.axes)
    table = markdown_table(results, axes)
    (out / "table.md").write_text(table)
    (out / "table.csv").write_text(csv_table(results, axes))
    (out / "seeds.csv").write_text(seeds_csv(results, axes))
    if matrix.heatmaps is None:
        figures = [(title, path.name) for metric, name, title in FIGURES
                   if (path := plot_matrix(matrix, results, metric, out / name)) is not None]
        heatmaps = []
    else:  # too many cells for per-round curves: one grid per metric instead
        figures, heatmaps = [], _heatmaps(matrix, results, out)
    configs = out / "configs"
    configs.mkdir(exist_ok=True)
    for r in results:
        resolved = r.cell.config(0).to_dict()
        (configs / f"{r.cell.name}.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    (configs / "matrix.yaml").write_text(matrix.path.read_text())
    verdicts = check_claims(matrix, results)
    commit = config_commit(matrix.path)
    _write_summary(out / "summary.json", matrix, results, seeds, verdicts, commit)
    lines = [f"# {matrix.title}", ""]
    if matrix.setting:
        lines += [_setting_table(matrix), ""]
    if matrix.description:
        lines += [matrix.description.strip(), ""]
    lines += ["Regenerate with", "", "```bash",
              f"fedsec matrix {_shown(matrix.path)} --seeds {seeds} --out {_shown(out)}",
              "```", "",
              f"{len(results)} cells x {seeds} seeds; each number is the mean ± standard "
              f"deviation over the seeds. fedsec {__version__}, torch {torch.__version__}, "
              f"{platform.machine()} CPU, {os.cpu_count()} cores.", "",
              "## Results", "", table,
              "Attackers / benign excluded: the share of the malicious / honest clients' "
              "participations that the defense left out of the aggregation (rules that combine "
              "every client, such as the coordinate-wise median or RFA, leave none out whole). "
              "Detection precision / recall / FPR: each round's share of the clients left out "
              "(excluded, or down-weighted below half an equal share) that were malicious, of "
              "the malicious clients left out, and of the honest clients left out, averaged "
              "over the rounds where the ratio is defined (docs/security.md, Detection). "
              "Aggregation time: the defense, the aggregation and the server step, per round. "
              "Every seed's numbers are in [seeds.csv](seeds.csv).",
              ""]
    lines += heatmaps
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{title}]({name})" for title, name in figures]
        lines += [""]
    if verdicts:
        lines += ["## Against published findings", "", _method(matrix, commit), "",
                  _verdict_table(verdicts), "### Each finding", ""]
        for v in verdicts:
            lines += _verdict_detail(v)
    if matrix.untestable:
        lines += ["## Findings not tested here", "",
                  "| finding | source | why not here |", "| --- | --- | --- |"]
        lines += [f"| {one_line(u.quote)} | {one_line(u.source)} | {one_line(u.why)} |"
                  for u in matrix.untestable]
        lines += [""]
    lines += ["## Configs", "",
              "The matrix config is [configs/matrix.yaml](configs/matrix.yaml); the resolved "
              "config of each cell (seed 0; seed k sets `common_args.random_seed: k`) is in "
              "[configs/](configs/)."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _heatmaps(matrix: MatrixConfig, results: list[CellResult], out: Path) -> list[str]:
    """The report's grids: per metric a table (rows x columns of the two axes) and its figure."""
    spec = matrix.heatmaps
    lines = ["## Grids", "",
             f"Each entry is the mean over the seeds ({spec.rows} down, {spec.columns} across; "
             f"the spread is in table.md, every seed in seeds.csv). {MARK} and a red frame "
             f"mark the cells a published finding speaks to (Against published findings, "
             f"below).", ""]
    for grid in grids(matrix, results):
        name = f"grid_{grid.column.metric}.png"
        plot_grid(grid, matrix.title, spec.rows, spec.columns, out / name)
        lines += [f"### {grid.column.title}", "", f"![{grid.column.title}]({name})", "",
                  markdown_grid(grid, f"{spec.rows} \\ {spec.columns}")]
    return lines


def config_commit(path: Path) -> str:
    """The short hash of the last commit that changed ``path`` (its margins and levels with
    it); 'uncommitted' when the file differs from HEAD or was never committed; 'not in a git
    checkout' when there is no repository or no git."""
    path = Path(path).resolve()

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=path.parent, capture_output=True, text=True,
                              timeout=30)

    try:
        if git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
            return "not in a git checkout"
        commit = git("log", "-1", "--format=%h", "--", path.name).stdout.strip()
        changed = git("diff", "--quiet", "HEAD", "--", path.name).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "not in a git checkout"
    return commit if commit and not changed else "uncommitted"


def _setting_table(matrix: MatrixConfig) -> str:
    rows = ["| setting | paper | here | why it differs |", "| --- | --- | --- | --- |"]
    rows += [f"| {r.name} | {one_line(r.paper)} | {one_line(r.here)} | "
             f"{one_line(r.why) or '-'} |"
             for r in matrix.setting]
    return "\n".join(rows)


def _method(matrix: MatrixConfig, commit: str) -> str:
    where = (f"commit `{commit}`, the last that changed it" if commit not in
             ("uncommitted", "not in a git checkout") else commit)
    return (f"Each claim reads `left - right op margin` on its metric, one value per seed. Its "
            f"verdict comes from {METHOD} of the difference of the two means (Welch-"
            f"Satterthwaite degrees of freedom; against a fixed value, the one-sample t "
            f"interval) at the level shown: **holds** when the whole interval lies on the "
            f"claimed side of the margin, **contradicted** when it lies wholly on the other "
            f"side, **inconclusive** otherwise, and whenever a side has one seed (no interval). "
            f"`~=` claims |left - right| <= margin. Margins and levels are fixed in the matrix "
            f"config, {_shown(matrix.path)} ({where}), before the runs.")


def _outcome(v: Verdict) -> str:
    if v.no_data:
        return "inconclusive (no data)"
    return v.outcome + (f" ({ONE_SEED})" if v.single_seed else "")


def _side(selection: dict[str, str] | None) -> str:
    return " / ".join(selection.values()) if selection is not None else ""


def _interval(v: Verdict) -> str:
    c = v.claim
    right = _side(c.right) or f"{c.value:.4g}"
    shown = f"{_side(c.left)} - {right}: " + ("no value" if math.isnan(v.difference)
                                               else f"{v.difference:+.4g}")
    if v.interval is not None:
        shown += f", {c.level * 100:g}% [{v.interval[0]:+.4g}, {v.interval[1]:+.4g}]"
    claimed = (f"within ± {c.margin:.4g}" if c.op == "~="
               else f"{c.op} {c.margin:+.4g}" if c.margin else f"{c.op} 0")
    return f"{shown}; claimed {claimed}"


def _verdict_table(verdicts: list[Verdict]) -> str:
    rows = ["| finding | source | there | here | difference, interval | |",
            "| --- | --- | --- | --- | --- | --- |"]
    for v in verdicts:
        c = v.claim
        agrees = {True: "agrees", False: "**disagrees**", None: "-"}[v.agrees]
        rows.append(f"| {c.claim} ({c.metric}) | {c.source} | "
                    f"{'holds' if c.expected_holds else 'fails'} | {_outcome(v)} | "
                    f"{_interval(v)} | {agrees} |")
    return "\n".join(rows) + "\n"


def _verdict_detail(v: Verdict) -> list[str]:
    """A claim in full: the quoted sentence, the means behind each side, the note."""
    c = v.claim
    lines = [f"**{c.claim}** ({c.source}): {_outcome(v)}.", ""]
    if c.quote:
        lines += [f"> {c.quote}", ""]
    right = (f"{_side(c.right)}: {v.right:.4g} ({v.right_seeds} seeds)" if c.right is not None
             else f"the value {v.right:.4g}")
    lines += [f"{c.metric}: {_side(c.left)}: {v.left:.4g} ({v.left_seeds} seeds) against "
              f"{right}; {_interval(v)}.", ""]
    if c.note:
        lines += [f"Note: {' '.join(c.note.split())}", ""]
    return lines


def one_line(text: str) -> str:
    """Text inside a Markdown table cell: one line, no column breaks."""
    return " ".join(text.split()).replace("|", "\\|")


def _number(x: float) -> float | None:
    """JSON has no NaN: a side without a value is null."""
    return None if math.isnan(x) else x


def _write_summary(path: Path, matrix: MatrixConfig, results: list[CellResult], seeds: int,
                   verdicts: list[Verdict], commit: str) -> None:
    """The matrix in numbers, for indexes across matrices (fedsec.matrix.index)."""
    summary = {
        "title": matrix.title, "cells": len(results), "seeds": seeds, "method": METHOD,
        "config_commit": commit, "extends": matrix.extends,
        "setting": [{"row": r.name, "paper": r.paper, "here": r.here, "why": r.why}
                    for r in matrix.setting],
        "untestable": [{"source": u.source, "quote": u.quote, "why": u.why}
                       for u in matrix.untestable],
        "claims": [{"claim": v.claim.claim, "source": v.claim.source, "quote": v.claim.quote,
                    "expected": "holds" if v.claim.expected_holds else "fails",
                    "here": v.outcome, "agrees": v.agrees, "metric": v.claim.metric,
                    "left_cell": v.claim.left, "right_cell": v.claim.right,
                    "left": _number(v.left), "right": _number(v.right),
                    "difference": _number(v.difference), "op": v.claim.op,
                    "margin": v.claim.margin, "level": v.claim.level,
                    "interval": list(v.interval) if v.interval is not None else None,
                    "seeds": v.seeds, "note": v.claim.note} for v in verdicts]}
    path.write_text(json.dumps(summary, indent=2) + "\n")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return shlex.quote(str(Path(path).resolve().relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(path))
