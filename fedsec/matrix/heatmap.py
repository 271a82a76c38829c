"""A two-axis matrix as grids: one axis down, the other across, each entry a metric's mean over
the seeds, as a Markdown table and a heatmap figure. For matrices too large for per-round
curves (the all-against-all table: every attack against every defense). Cells a published
finding speaks to (a claim's left or right side) are marked in both."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .config import MatrixConfig
from .results import CellResult
from .table import COLUMNS, Column

MARK = "†"  # a cell a published finding speaks to


@dataclass(frozen=True)
class Grid:
    column: Column
    rows: list[str]
    columns: list[str]
    values: list[list[float]]  # NaN where no seed has the metric
    marked: set[tuple[str, str]]

    def shown(self, row: int, col: int) -> str:
        value = self.values[row][col]
        if math.isnan(value):
            return "-"
        return f"{value * self.column.scale:.{max(self.column.digits - 1, 0)}f}"


def grids(matrix: MatrixConfig, results: list[CellResult]) -> list[Grid]:
    """A grid for each of the matrix's heatmap metrics that some cell has."""
    spec = matrix.heatmaps
    rows, cols = list(matrix.axes[spec.rows]), list(matrix.axes[spec.columns])
    by_cell = {(r.cell.value(spec.rows), r.cell.value(spec.columns)): r for r in results}
    marked = {(side[spec.rows], side[spec.columns]) for c in matrix.claims
              for side in (c.left, c.right) if side is not None}
    columns = {c.metric: c for c in COLUMNS}
    out = []
    for metric in spec.metrics:
        values = [[_mean(by_cell.get((row, col)), metric) for col in cols] for row in rows]
        if all(math.isnan(v) for line in values for v in line):
            continue
        out.append(Grid(columns[metric], rows, cols, values, marked))
    return out


def _mean(result: CellResult | None, metric: str) -> float:
    stats = result.stats(metric) if result is not None else None
    return stats[0] if stats else math.nan


def markdown_grid(grid: Grid, corner: str) -> str:
    head = [corner, *grid.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for i, row in enumerate(grid.rows):
        entries = [grid.shown(i, j) + (f" {MARK}" if (row, col) in grid.marked else "")
                   for j, col in enumerate(grid.columns)]
        lines.append(f"| {row} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def plot_grid(grid: Grid, title: str, ylabel: str, xlabel: str, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    data = np.array(grid.values, dtype=float) * grid.column.scale
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(grid.columns), 1.2 + 0.3 * len(grid.rows)),
                           dpi=110)
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto",
                      vmin=0.0, vmax=100.0 if grid.column.scale == 100 else None)
    ax.set_xticks(range(len(grid.columns)), grid.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(grid.rows)), grid.rows, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    middle = np.nanmean(data) if np.isfinite(data).any() else 0.0
    for i in range(len(grid.rows)):
        for j in range(len(grid.columns)):
            text = grid.shown(i, j)
            ax.text(j, i, text, ha="center", va="center", fontsize=5,
                    color="black" if np.isfinite(data[i, j]) and data[i, j] > middle
                    else "white")
            if (grid.rows[i], grid.columns[j]) in grid.marked:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                                       linewidth=1.2))
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01).set_label(grid.column.title)
    ax.set_title(f"{title}: {grid.column.title} (mean over seeds; red: a published finding's "
                 f"cell)", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
