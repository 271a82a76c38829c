"""A matrix's report directory: table.md / table.csv, the figures, each cell's resolved config,
and report.md tying them together with published findings checked. Every number in it comes
from the runs."""
from __future__ import annotations

import json
import os
import platform
import shlex
from pathlib import Path

import torch
import yaml

from .. import __version__
from .claims import Verdict, check_claims
from .config import MatrixConfig
from .figures import plot_matrix
from .results import CellResult
from .table import csv_table, markdown_table

FIGURES = (("test_accuracy", "accuracy.png", "Test accuracy per round"),
           ("backdoor_accuracy", "backdoor.png", "Backdoor success rate per round"),
           ("test_perplexity", "perplexity.png", "Test perplexity per round"))


def write_report(matrix: MatrixConfig, results: list[CellResult], out: Path, seeds: int
                 ) -> Path:
    axes = list(matrix.axes)
    table = markdown_table(results, axes)
    (out / "table.md").write_text(table)
    (out / "table.csv").write_text(csv_table(results, axes))
    figures = [(title, path.name) for metric, name, title in FIGURES
               if (path := plot_matrix(matrix, results, metric, out / name)) is not None]
    configs = out / "configs"
    configs.mkdir(exist_ok=True)
    for r in results:
        resolved = r.cell.config(0).to_dict()
        (configs / f"{r.cell.name}.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    (configs / "matrix.yaml").write_text(matrix.path.read_text())
    verdicts = check_claims(matrix, results)
    _write_summary(out / "summary.json", matrix, results, seeds, verdicts)
    lines = [f"# {matrix.title}", ""]
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
              "Aggregation time: the defense, the aggregation and the server step, per round.",
              ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{title}]({name})" for title, name in figures]
        lines += [""]
    if verdicts:
        lines += ["## Against published findings", "", _verdict_table(verdicts)]
        notes = [v for v in verdicts if v.agrees is False and v.claim.note]
        for v in notes:
            lines += [f"- *{v.claim.claim}*: {v.claim.note.strip()}"]
        lines += [""] if notes else []
    lines += ["## Configs", "",
              "The matrix config is [configs/matrix.yaml](configs/matrix.yaml); the resolved "
              "config of each cell (seed 0; seed k sets `common_args.random_seed: k`) is in "
              "[configs/](configs/)."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_summary(path: Path, matrix: MatrixConfig, results: list[CellResult], seeds: int,
                   verdicts: list[Verdict]) -> None:
    """The matrix in numbers, for indexes across matrices."""
    summary = {
        "title": matrix.title, "cells": len(results), "seeds": seeds,
        "claims": [{"claim": v.claim.claim, "source": v.claim.source,
                    "expected": "holds" if v.claim.expected_holds else "fails",
                    "here": {True: "holds", False: "fails", None: "no data"}[v.holds_here],
                    "agrees": v.agrees, "metric": v.claim.metric, "left": v.left,
                    "right": v.right, "seeds": v.seeds} for v in verdicts]}
    path.write_text(json.dumps(summary, indent=2) + "\n")


def _verdict_table(verdicts: list[Verdict]) -> str:
    rows = ["| finding | source | there | here | |", "| --- | --- | --- | --- | --- |"]
    for v in verdicts:
        c = v.claim
        right = (" / ".join(c.right.values()) if c.right is not None else "")
        margin = f" {'+' if c.margin >= 0 else '-'} {abs(c.margin):.3g}" if c.margin else ""
        compared = (f"{' / '.join(c.left.values())}: {v.left:.4g} {c.op} "
                    f"{right + (': ' if right else '')}{v.right - c.margin:.4g}{margin}")
        here = {True: "holds", False: "fails", None: "no data"}[v.holds_here]
        if v.single_seed:
            here += " (one seed: no spread to judge by)"
        verdict = {True: "agrees", False: "**disagrees**", None: "-"}[v.agrees]
        rows.append(f"| {c.claim} ({c.metric}) | {c.source} | "
                    f"{'holds' if c.expected_holds else 'fails'} | {here}: {compared} | "
                    f"{verdict} |")
    return "\n".join(rows) + "\n"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return shlex.quote(str(Path(path).resolve().relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(path))
