"""Smallest maximum eigenvalue averaging (Allouah et al. 2023, as ByzFL defines it) on the
Gram matrix."""
from __future__ import annotations

from ...params import check
from .. import spectral
from ..context import AggregationContext
from ._common import normalised, result, weights_of


def smea(updates, f: int, weights=None, *, on_nonfinite: str = "exclude",
         return_info: bool = False, backend: str = "auto", pre=None):
    """Smallest maximum eigenvalue averaging (Allouah, Guerraoui, Gupta, Pinot, Stephan, ICML
    2023, "On the privacy-robustness-utility trilemma in distributed learning"; ByzFL's
    ``SMEA``): the mean (weighted by ``weights`` when given) of the n - f updates whose
    empirical covariance (1/|S|) sum_{i in S} (x_i - mu_S)(x_i - mu_S)^T has the smallest
    largest eigenvalue; requires n > 2f.

    Each subset's eigenvalue is exact, from its centred (n - f) x (n - f) sub-Gram matrix
    (ByzFL estimates it by one power iteration from a random start). The subsets are searched
    exactly while C(n, f) (n - f)^2 <= 10^7, greedily beyond (f times, drop the update whose
    removal leaves the smallest eigenvalue; lowest index on ties). docs/api.md."""
    f = check("f", f, int, ge=0)
    ctx = AggregationContext("smea", updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)

    def body():
        gram = ctx.gram()
        ctx.require(ctx.n > 2 * f, f"n > 2f; got n={ctx.n}, f={f}")
        subset, _ = spectral.best_subset(
            ctx.n, ctx.n - f, lambda s: spectral.subset_max_eigenvalues(gram.matrix, s))
        chosen = [ctx.active[i] for i in subset]
        a = normalised(ctx, w, chosen)
        value = ctx.combine(a, clients=chosen)
        return value, ctx.info(chosen, coefficients=ctx.expand(a, chosen))

    return result(ctx.run(body), return_info)
