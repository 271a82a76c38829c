"""Minimum-diameter averaging (El Mhamdi, Guerraoui, Rouault 2018) on the Gram matrix."""
from __future__ import annotations

from ...params import check
from .. import solvers, spectral
from ..context import AggregationContext
from ._common import normalised, result, weights_of


def mda(updates, f: int, weights=None, *, on_nonfinite: str = "exclude",
        return_info: bool = False, backend: str = "auto", pre=None):
    """Minimum-diameter averaging (El Mhamdi, Guerraoui, Rouault, ICML 2018, "The hidden
    vulnerability of distributed learning in Byzantium"): the mean (weighted by ``weights``
    when given) of the n - f updates whose set has the smallest diameter
    max_{i, j in S} ||x_i - x_j||; requires n > 2f.

    The subsets are searched on the n x n distances: exactly while C(n, f) (n - f)^2 <= 10^7
    (the first smallest in itertools.combinations order), greedily beyond (f times, drop the
    endpoint of the farthest pair that is farther from the rest: spectral.farthest_pair_drop).
    docs/api.md."""
    f = check("f", f, int, ge=0)
    ctx = AggregationContext("mda", updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)

    def body():
        gram = ctx.gram()
        ctx.require(ctx.n > 2 * f, f"n > 2f; got n={ctx.n}, f={f}")
        D = solvers.squared_distances(gram.matrix)
        subset, _ = spectral.best_subset(ctx.n, ctx.n - f,
                                         lambda s: spectral.subset_diameters(D, s),
                                         spectral.farthest_pair_drop(D))
        chosen = [ctx.active[i] for i in subset]
        a = normalised(ctx, w, chosen)
        value = ctx.combine(a, clients=chosen)
        return value, ctx.info(chosen, coefficients=ctx.expand(a, chosen))

    return result(ctx.run(body), return_info)
