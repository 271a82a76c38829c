"""A matrix's figures as the paper's: a metric per round, one line per cell (the mean over
seeds, shaded +- one standard deviation). With two or more axes, one panel per value of the
first axis."""
from __future__ import annotations

import math
from pathlib import Path

from ..fl.plot import METRIC_LABELS
from .config import MatrixConfig
from .results import CellResult

PANELS_PER_ROW = 3


def plot_matrix(matrix: MatrixConfig, results: list[CellResult], metric: str, out: Path
                ) -> Path | None:
    """Write the figure of ``metric``; None when no run has it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = [(r, *r.curve(metric)) for r in results]
    if not any(len(c[1]) for c in curves):
        return None
    axes = list(matrix.axes)
    panels = list(matrix.axes[axes[0]]) if len(axes) > 1 else [None]
    cols = min(len(panels), PANELS_PER_ROW)
    rows = math.ceil(len(panels) / cols)
    fig, subplots = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), dpi=110,
                                 squeeze=False, sharey=True)
    for ax in subplots.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(subplots.flat, panels):
        for result, rounds, mean, std in curves:
            if panel is not None and result.cell.value(axes[0]) != panel:
                continue
            if not len(rounds):
                continue
            label = " / ".join(result.cell.value(a) for a in axes[1:]) if panel else \
                result.cell.label
            (line,) = ax.plot(rounds, mean, label=label, linewidth=1.4)
            ax.fill_between(rounds, mean - std, mean + std, color=line.get_color(), alpha=0.15,
                            linewidth=0)
        ax.set_title(f"{axes[0]}: {panel}" if panel is not None else matrix.title, fontsize=9)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric.endswith("accuracy"):
            ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    for row in subplots:
        row[0].set_ylabel(METRIC_LABELS.get(metric, metric))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
