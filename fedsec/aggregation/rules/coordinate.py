"""The coordinate-wise rules of Yin et al. 2018: one selection pass over the data."""
from __future__ import annotations

import math

from ...params import check
from ..backends import SelectOp
from ..context import AggregationContext
from ._common import result


def median(updates, *, on_nonfinite: str = "exclude", return_info: bool = False,
           backend: str = "auto", pre=None):
    """Coordinate-wise median (Yin et al. 2018); an even count gives the mean of the two middle
    values."""
    ctx = AggregationContext("median", updates, on_nonfinite, backend, pre)

    def body():
        return ctx.select(SelectOp.MEDIAN, 0), ctx.info(ctx.active)

    return result(ctx.run(body), return_info)


def trimmed_mean(updates, beta: float, *, on_nonfinite: str = "exclude",
                 return_info: bool = False, backend: str = "auto", pre=None):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drop the k = floor(beta * n) smallest and
    k largest values of each coordinate and average the rest; 0 <= beta < 0.5."""
    beta = check("beta", beta, float, ge=0, lt=0.5)
    ctx = AggregationContext("trimmed_mean", updates, on_nonfinite, backend, pre)

    def body():
        k = math.floor(beta * ctx.n)
        return ctx.select(SelectOp.TRIMMED_MEAN, k), ctx.info(ctx.active)

    return result(ctx.run(body), return_info)
