"""A matrix's table: one row per cell, each number the mean +- standard deviation over the
cell's seeds, as Markdown and CSV."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from .results import CellResult


@dataclass(frozen=True)
class Column:
    metric: str
    title: str
    scale: float  # shown value = metric * scale
    digits: int


COLUMNS = (
    Column("final_test_accuracy", "final accuracy (%)", 100, 2),
    Column("best_test_accuracy", "best accuracy (%)", 100, 2),
    Column("final_backdoor_accuracy", "backdoor success (%)", 100, 2),
    Column("final_test_perplexity", "test perplexity", 1, 2),
    Column("attackers_excluded", "attackers excluded (%)", 100, 1),
    Column("benign_excluded", "benign excluded (%)", 100, 1),
    Column("detection_precision", "detection precision (%)", 100, 1),
    Column("detection_recall", "detection recall (%)", 100, 1),
    Column("detection_fpr", "detection FPR (%)", 100, 1),
    Column("mean_aggregation_time_s", "aggregation / round (ms)", 1000, 2),
)


def columns_for(results: list[CellResult]) -> list[Column]:
    """The columns some cell has a value for (no all-empty backdoor column under a Byzantine
    attack, for instance)."""
    return [c for c in COLUMNS if any(r.stats(c.metric) for r in results)]


def _cell_text(result: CellResult, column: Column) -> str:
    stats = result.stats(column.metric)
    if stats is None:
        return "-"
    mean, std, n = stats
    text = f"{mean * column.scale:.{column.digits}f}"
    return text + (f" ± {std * column.scale:.{column.digits}f}" if n > 1 else "")


def markdown_table(results: list[CellResult], axes: list[str]) -> str:
    columns = columns_for(results)
    head = [*axes, *(c.title for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for r in results:
        row = [r.cell.value(a) for a in axes] + [_cell_text(r, c) for c in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def csv_table(results: list[CellResult], axes: list[str]) -> str:
    """Raw numbers (not scaled): for each metric its mean, std and seed count."""
    columns = columns_for(results)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*axes, *(f"{c.metric}_{part}" for c in columns
                              for part in ("mean", "std", "seeds"))])
    for r in results:
        row: list[object] = [r.cell.value(a) for a in axes]
        for c in columns:
            stats = r.stats(c.metric)
            row.extend(stats if stats else ("", "", 0))
        writer.writerow(row)
    return out.getvalue()


def seeds_csv(results: list[CellResult], axes: list[str]) -> str:
    """Every seed's numbers (not scaled), one row per run: what the means are made of."""
    columns = columns_for(results)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*axes, "seed", *(c.metric for c in columns)])
    for r in results:
        for s in r.seeds:
            values = [s.metric(c.metric) for c in columns]
            writer.writerow([*(r.cell.value(a) for a in axes), s.seed,
                             *("" if v is None else repr(v) for v in values)])
    return out.getvalue()
