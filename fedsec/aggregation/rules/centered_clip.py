"""Centered clipping (Karimireddy, He & Jaggi 2021) on the Gram matrix."""
from __future__ import annotations

import numpy as np

from ...params import check
from .. import solvers
from ..context import AggregationContext
from ._common import result


def centered_clip(updates, tau: float, iters: int = 1, center=None, *,
                  on_nonfinite: str = "exclude", return_info: bool = False,
                  backend: str = "auto", pre=None):
    """Centered clipping (Karimireddy et al. 2021): v <- v + (1/n) sum_i (x_i - v) min(1, tau /
    ||x_i - v||), ``iters`` times, from ``center`` (one update in the same form, e.g. the last
    global model) or, when None, from the medoid update (ties within a relative 1e-6 go to the
    lowest index, docs/api.md)."""
    tau = check("tau", tau, float, gt=0)
    iters = check("iters", iters, int, ge=1)
    ctx = AggregationContext("centered_clip", updates, on_nonfinite, backend, pre)
    start = ctx.center(center) if center is not None else None

    def body():
        gram = ctx.gram(start, medoid=start is None)
        beta = np.zeros(ctx.n)  # the start point: center itself, or the medoid client
        if start is None:
            beta[gram.medoid] = 1.0
        beta = solvers.centered_clip(gram.matrix, beta, gram.length(tau), iters)
        remainder = 1.0 - beta.sum()
        if start is None:
            # Centered on the first client in play: its coefficient takes the remainder.
            coefficients = beta.copy()
            coefficients[0] += remainder
            value = ctx.combine(coefficients)
        else:
            coefficients = beta
            value = ctx.combine(coefficients, center=start, center_coefficient=remainder)
        return value, ctx.info(ctx.active, coefficients=ctx.expand(coefficients), iterations=iters)

    return result(ctx.run(body), return_info)
