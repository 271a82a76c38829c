"""The frame of the rules that read norms, cosines or signs of updates (fltrust, flame,
signguard, clipped_clustering).

Such a rule takes the given vectors as the updates, or, with ``center=`` (e.g. the global
model), the given vectors as models whose updates are x_i - center. Either way its numbers
come from the Gram matrix centered on that frame's point (the origin, or ``center``), and its
output is ``point + sum_i c_i (x_i - point)``: one combination pass.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..context import AggregationContext
from ..updates import Block, UpdateSet


def _single(updates: UpdateSet, rows: list[Any]) -> UpdateSet:
    """A one-point set in the updates' layout, from one buffer per block."""
    return UpdateSet(1, updates.form, updates.library, updates.dtype, updates.device,
                     [Block(b.key, [r], b.shape) for b, r in zip(updates.blocks, rows)], {}, [])


def origin(updates: UpdateSet) -> UpdateSet:
    """The zero vector in the updates' layout."""
    rows = []
    for block in updates.blocks:
        out = updates.new_output(block)
        if isinstance(out, torch.Tensor):
            out.zero_()
        else:
            out.fill(0)
        rows.append(out)
    return _single(updates, rows)


def shifted(point: UpdateSet, offset: UpdateSet) -> UpdateSet:
    """point + offset, block by block, in the points' dtype."""
    return _single(point, [p.rows[0] + o.rows[0] for p, o in zip(point.blocks, offset.blocks)])


def frame(ctx: AggregationContext, center: Any) -> UpdateSet:
    """The point the updates are relative to: ``center`` (checked: same layout, finite) or the
    origin."""
    return ctx.center(center) if center is not None else origin(ctx.updates)


def squared_norm(ctx: AggregationContext, point: UpdateSet, name: str) -> float:
    """||point||^2 in float64 products (one backend Gram pass over the point alone); a
    ValueError naming ``name`` when it is not finite."""
    acc = ctx.backend.new_gram(1)
    for block in point.blocks:
        ctx.backend.gram(block.rows, None, acc, False)
    value = float(ctx.backend.gram_result(acc)[0, 0])
    if not np.isfinite(value):
        raise ValueError(f"{ctx.rule}: {name} holds non-finite values (NaN or Inf), or its "
                         f"squared norm exceeds the float64 range")
    return value


def combine_in_frame(ctx: AggregationContext, coefficients: np.ndarray, clients: list[int],
                     point: UpdateSet):
    """point + sum_k coefficients[k] (x_{clients[k]} - point), in one pass; the point itself
    when no client is used (combined from the first client in play with coefficient 0, which
    gives the result its form, e.g. a state_dict's non-floating entries)."""
    if not clients:
        clients, coefficients = ctx.active[:1], np.zeros(1)
    return ctx.combine(coefficients, clients=clients, center=point,
                       center_coefficient=1.0 - float(np.sum(coefficients)))
