"""Krum and multi-Krum (Blanchard et al. 2017) on the Gram matrix: two passes over the data."""
from __future__ import annotations

import numpy as np

from ...params import check
from .. import solvers
from ..context import AggregationContext
from ._common import normalised, result, weights_of


def _krum_checked(ctx: AggregationContext, f: int):
    gram = ctx.gram()
    ctx.require(ctx.n > 2 * f + 2, f"n > 2f + 2; got n={ctx.n}, f={f}")
    return gram, solvers.squared_distances(gram.matrix)


def krum_scores(updates, f: int, *, on_nonfinite: str = "exclude", return_info: bool = False,
                backend: str = "auto", pre=None):
    """Krum scores (Blanchard et al. 2017): for each client, the sum of squared distances to its
    n - f - 2 nearest other updates. Returns a float64 numpy array of n scores (inf for excluded
    clients, and for scores beyond the float64 range)."""
    f = check("f", f, int, ge=0)
    ctx = AggregationContext("krum_scores", updates, on_nonfinite, backend, pre)

    def body():
        gram, D = _krum_checked(ctx, f)
        scores = ctx.expand(gram.squares(solvers.krum_scores(D, f)), fill=np.inf)
        return scores, ctx.info(ctx.active, scores=scores)

    return result(ctx.run(body), return_info)


def krum(updates, f: int, m: int = 1, weights=None, *, on_nonfinite: str = "exclude",
         return_info: bool = False, backend: str = "auto", pre=None):
    """Krum (m=1) and multi-Krum (Blanchard et al. 2017): the mean of the m updates with the
    lowest Krum scores (weighted by ``weights`` when given; ties broken by lower index)."""
    f = check("f", f, int, ge=0)
    m = check("m", m, int, ge=1)
    ctx = AggregationContext("krum", updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)

    def body():
        gram, D = _krum_checked(ctx, f)
        ctx.require(m <= ctx.n, f"m <= n; got m={m}, n={ctx.n}")
        scores = solvers.krum_scores(D, f)
        chosen = sorted(ctx.active[i] for i in solvers.lowest(scores, m))
        a = normalised(ctx, w, chosen)
        value = ctx.combine(a, clients=chosen)
        return value, ctx.info(chosen, coefficients=ctx.expand(a, chosen),
                               scores=ctx.expand(gram.squares(scores), fill=np.inf))

    return result(ctx.run(body), return_info)
