"""What the rules share: the ``weights=`` argument checked and normalised over the clients a
rule uses, the ``return_info=`` switch, and ``subset_mean``, the skeleton of the rules that
average the best n - f updates (MDA, SMEA)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ...params import check
from ..context import AggregationContext


def weights_of(weights: Sequence[float] | None, n: int, pre=()) -> np.ndarray | None:
    """The weights as float64, checked; refused beside ``pre`` (the context's chain): mixed
    updates are combinations of clients and have no sample counts of their own."""
    if weights is None:
        return None
    if pre:
        raise ValueError("weights cannot be combined with pre=: the mixed updates are "
                         "combinations of clients, with no per-client weights; pass one of them")
    w = np.asarray(weights.cpu() if hasattr(weights, "cpu") else weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must be 1-D with one entry per client (n={n}); "
                         f"got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and >= 0; got {w.tolist()}")
    return w


def normalised(ctx: AggregationContext, w: np.ndarray | None, clients: list[int]) -> np.ndarray:
    """The weights of ``clients`` scaled to sum to 1 (uniform when no weights were given)."""
    if w is None:
        return np.full(len(clients), 1.0 / len(clients))
    sub = w[clients]
    with np.errstate(over="ignore"):
        total = sub.sum()
    if np.isinf(total):  # finite weights whose sum overflows: the same proportions, smaller
        sub = sub / sub.max()
        total = sub.sum()
    ctx.require(total > 0, f"a positive total weight over the clients it uses {clients}; got 0")
    return sub / total


def result(value_and_info: tuple, return_info: bool):
    return value_and_info if return_info else value_and_info[0]


def subset_mean(name: str, updates, f: int, weights, on_nonfinite: str, return_info: bool,
                backend: str, pre, search: Callable[[np.ndarray, int, int], list[int]]):
    """The mean (weighted by ``weights`` when given) of the n - f updates at the positions
    ``search(gram, n, n - f)`` returns (from the n x n Gram matrix of the finite updates);
    requires n > 2f. The coefficients in the info are those of the mean, 0 elsewhere."""
    f = check("f", f, int, ge=0)
    ctx = AggregationContext(name, updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)

    def body():
        gram = ctx.gram()
        ctx.require(ctx.n > 2 * f, f"n > 2f; got n={ctx.n}, f={f}")
        chosen = [ctx.active[i] for i in search(gram.matrix, ctx.n, ctx.n - f)]
        a = normalised(ctx, w, chosen)
        value = ctx.combine(a, clients=chosen)
        return value, ctx.info(chosen, coefficients=ctx.expand(a, chosen))

    return result(ctx.run(body), return_info)
