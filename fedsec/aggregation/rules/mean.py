"""The weighted mean, FedAvg's aggregation."""
from __future__ import annotations

from ..context import AggregationContext
from ._common import normalised, result, weights_of


def mean(updates, weights=None, *, on_nonfinite: str = "exclude", return_info: bool = False,
         backend: str = "auto", pre=None):
    """Weighted mean (FedAvg, McMahan et al. 2017); ``weights`` are e.g. sample counts."""
    ctx = AggregationContext("mean", updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)

    def body():
        a = normalised(ctx, w, ctx.active)
        value = ctx.combine(a)
        used = [c for c, x in zip(ctx.active, a) if x > 0]
        return value, ctx.info(used, coefficients=ctx.expand(a))

    return result(ctx.run(body), return_info)
