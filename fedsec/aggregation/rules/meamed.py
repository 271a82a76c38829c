"""Mean around the median (Xie, Koyejo, Gupta 2018): one selection pass over the data."""
from __future__ import annotations

from ...params import check
from ..backends import SelectOp
from ..context import AggregationContext
from ._common import result


def meamed(updates, f: int, *, on_nonfinite: str = "exclude", return_info: bool = False,
           backend: str = "auto", pre=None):
    """Mean around the median (Xie, Koyejo, Gupta 2018, "Generalized Byzantine-tolerant SGD"):
    per coordinate, the mean of the n - f values closest to the coordinate's median (on a
    distance tie the larger value is dropped, as in Bulyan's second stage); n > 2f."""
    f = check("f", f, int, ge=0)
    ctx = AggregationContext("meamed", updates, on_nonfinite, backend, pre)

    def body():
        ctx.require(ctx.n > 2 * f, f"n > 2f; got n={ctx.n}, f={f}")
        return ctx.select(SelectOp.CLOSEST_MEDIAN, ctx.n - f), ctx.info(ctx.active)

    return result(ctx.run(body), return_info)
