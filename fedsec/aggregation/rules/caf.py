"""The covariance-bound agnostic filter (Allouah, Guerraoui, Stephan 2025, as ByzFL defines
it) on the Gram matrix."""
from __future__ import annotations

from ...params import check
from .. import spectral
from ..context import AggregationContext
from ._common import result


def caf(updates, f: int, *, on_nonfinite: str = "exclude", return_info: bool = False,
        backend: str = "auto", pre=None):
    """Covariance-bound agnostic filter (Allouah, Guerraoui, Stephan, ICML 2025, "Towards
    trustworthy federated learning with untrusted participants"; ByzFL's ``CAF``): from
    weights c = 1, while sum(c) > n - 2f, take the c-weighted mean mu_c and the top eigenpair
    (lambda, v) of the c-weighted covariance, and scale each c_i by 1 - tau_i / max_j tau_j,
    tau_i = ((x_i - mu_c) . v)^2; return the mu_c with the smallest lambda seen. Requires
    n > 2f; f = 0 is the mean.

    The eigenpairs are exact, of an n x n matrix built from the Gram matrix
    (fedsec.aggregation.spectral; ByzFL runs one power iteration from a random start), so the
    result is deterministic. ``info.iterations`` counts the filtering steps."""
    f = check("f", f, int, ge=0)
    ctx = AggregationContext("caf", updates, on_nonfinite, backend, pre)

    def body():
        gram = ctx.gram()
        ctx.require(ctx.n > 2 * f, f"n > 2f; got n={ctx.n}, f={f}")
        a, iterations = spectral.caf(gram.matrix, f)
        value = ctx.combine(a)
        used = [c for c, x in zip(ctx.active, a) if x > 0]
        return value, ctx.info(used, coefficients=ctx.expand(a), iterations=iterations)

    return result(ctx.run(body), return_info)
