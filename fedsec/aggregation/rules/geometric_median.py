"""The geometric median (RFA) by smoothed Weiszfeld iterations on the Gram matrix."""
from __future__ import annotations

from ...params import check
from .. import solvers
from ..context import AggregationContext
from ._common import normalised, result, weights_of


def geometric_median(updates, weights=None, nu: float = 1e-6, max_iter: int = 100,
                     tol: float = 1e-7, *, on_nonfinite: str = "exclude",
                     return_info: bool = False, backend: str = "auto", pre=None):
    """Geometric median by smoothed Weiszfeld iterations (Pillutla et al., RFA): argmin_z
    sum_i a_i ||z - x_i|| with a the normalised weights. Stops when the estimated distance to
    the minimiser is at most tol times the weighted median distance from z to the clients
    (docs/api.md says what that guarantees). The iterations run on the n x n Gram matrix, so
    the data is read twice whatever the number of iterations."""
    nu = check("nu", nu, float, gt=0)
    max_iter = check("max_iter", max_iter, int, ge=1)
    tol = check("tol", tol, float, ge=0)
    ctx = AggregationContext("geometric_median", updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)

    def body():
        gram = ctx.gram()
        a = normalised(ctx, w, ctx.active)
        beta, iterations = solvers.weiszfeld(gram.matrix, a, gram.length(nu), max_iter, tol)
        value = ctx.combine(beta)
        used = [c for c, x in zip(ctx.active, a) if x > 0]
        return value, ctx.info(used, coefficients=ctx.expand(beta), iterations=iterations)

    return result(ctx.run(body), return_info)
