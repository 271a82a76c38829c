"""Bulyan (El Mhamdi et al. 2018): Krum selection, then a coordinate-wise trimmed average."""
from __future__ import annotations

import numpy as np

from ...params import check
from .. import solvers
from ..backends import SelectOp
from ..context import AggregationContext
from ._common import result


def bulyan(updates, f: int, *, on_nonfinite: str = "exclude", return_info: bool = False,
           backend: str = "auto", pre=None):
    """Bulyan (El Mhamdi et al. 2018): select theta = n - 2f updates by repeated Krum, then per
    coordinate average the theta - 2f selected values closest to their median; n >= 4f + 3."""
    f = check("f", f, int, ge=0)
    ctx = AggregationContext("bulyan", updates, on_nonfinite, backend, pre)

    def body():
        gram = ctx.gram()
        ctx.require(ctx.n >= 4 * f + 3, f"n >= 4f + 3; got n={ctx.n}, f={f}")
        D = solvers.squared_distances(gram.matrix)
        theta = ctx.n - 2 * f
        chosen = sorted(ctx.active[i] for i in solvers.bulyan_selection(D, f, theta))
        value = ctx.select(SelectOp.CLOSEST_MEDIAN, theta - 2 * f, clients=chosen)
        scores = gram.squares(solvers.krum_scores(D, f))
        return value, ctx.info(chosen, scores=ctx.expand(scores, fill=np.inf))

    return result(ctx.run(body), return_info)
