"""MoNNA, the mean of a trusted update's nearest neighbours (Farhadkhani et al. 2023), on the
Gram matrix."""
from __future__ import annotations

from ...params import check
from .. import solvers
from ..context import AggregationContext
from ..errors import CannotAggregateError
from ._common import normalised, result, weights_of


def monna(updates, f: int, trusted: int, weights=None, *, on_nonfinite: str = "exclude",
          return_info: bool = False, backend: str = "auto"):
    """MoNNA (Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan, ICML 2023, "Robust
    collaborative learning with linear gradient overhead"): the mean (weighted by ``weights``
    when given) of the n - f updates nearest to the update of client ``trusted`` (its
    position in ``updates``), that update included; requires n > 2f. Ties in distance go to
    the lower index, after the trusted client itself."""
    f = check("f", f, int, ge=0)
    trusted = check("trusted", trusted, int, ge=0)
    ctx = AggregationContext("monna", updates, on_nonfinite, backend)
    if trusted >= ctx.updates.n:
        raise ValueError(f"monna: trusted={trusted} must be the position of one of the "
                         f"{ctx.updates.n} updates (0 to {ctx.updates.n - 1})")
    w = weights_of(weights, ctx.updates.n)

    def body():
        gram = ctx.gram()
        ctx.require(ctx.n > 2 * f, f"n > 2f; got n={ctx.n}, f={f}")
        if trusted not in ctx.active:
            raise CannotAggregateError(f"monna: the trusted client {trusted}'s update holds "
                                       f"non-finite values (NaN or Inf)")
        t = ctx.active.index(trusted)
        distances = solvers.squared_distances(gram.matrix)[t]
        distances[t] = -1.0  # the trusted update is its own nearest neighbour
        chosen = sorted(ctx.active[i] for i in solvers.lowest(distances, ctx.n - f))
        a = normalised(ctx, w, chosen)
        value = ctx.combine(a, clients=chosen)
        return value, ctx.info(chosen, coefficients=ctx.expand(a, chosen))

    return result(ctx.run(body), return_info)
