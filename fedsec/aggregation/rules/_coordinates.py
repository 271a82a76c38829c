"""Seeded coordinate subsets and the clients' values there (DnC's subsampled coordinates,
SignGuard's sign statistics).

A coordinate is a position in the flattened update: the blocks one after the other (for
state_dicts, the floating parameters in key order), each flattened in C order. The subset is
drawn on the CPU from a numpy Generator, so it is the same on every backend and device.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import pre as pre_module
from ..context import AggregationContext
from ..updates import UpdateSet


def sampled_coordinates(d: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` distinct coordinates of range(d) drawn from ``rng``, ascending; all of them
    (drawing nothing) when size >= d."""
    if size >= d:
        return np.arange(d)
    return np.sort(rng.choice(d, size, replace=False))


def _take(row: Any, local: np.ndarray) -> np.ndarray:
    if isinstance(row, torch.Tensor):
        index = torch.as_tensor(local, device=row.device)
        return row.reshape(-1).index_select(0, index).to(torch.float64).cpu().numpy()
    return np.asarray(row).reshape(-1)[local].astype(np.float64)


def _values(updates: UpdateSet, coordinates: np.ndarray, clients: list[int]) -> np.ndarray:
    """[len(clients), len(coordinates)] float64: the clients' values at the coordinates."""
    out = np.empty((len(clients), len(coordinates)))
    start = 0
    for block in updates.blocks:
        lo, hi = np.searchsorted(coordinates, [start, start + block.size])
        if hi > lo:
            local = coordinates[lo:hi] - start
            for k, c in enumerate(clients):
                out[k, lo:hi] = _take(block.rows[c], local)
        start += block.size
    return out


def gather(ctx: AggregationContext, coordinates: np.ndarray, rows: list[int],
           point: UpdateSet | None = None) -> np.ndarray:
    """[len(rows), len(coordinates)] float64: the rule's ``rows`` (clients, or with pre= mixed
    updates: E times every source's values) at the ascending ``coordinates``, minus ``point``
    when given."""
    if not ctx.pre:
        values = _values(ctx.updates, coordinates, rows)
    else:
        E = ctx.mixing()[rows]
        values = E[:, :len(ctx.in_play)] @ _values(ctx.updates, coordinates, ctx.in_play)
        clips, center = pre_module.center_of(ctx.pre)
        if clips and center is not None:  # the clipping chain's center takes the remainders
            values += E[:, -1:] * _values(ctx.updates.like(center, "center"), coordinates, [0])
    if point is not None:
        values -= _values(point, coordinates, [0])
    return values
