"""Divide-and-Conquer (Shejwalkar & Houmansadr 2021) on subsampled coordinates."""
from __future__ import annotations

import math

import numpy as np

from ...params import check
from .. import solvers, spectral
from ..context import AggregationContext
from ._common import normalised, result, weights_of
from ._coordinates import gather, sampled_coordinates


def dnc(updates, f: int, weights=None, *, subsample: int = 10_000, iters: int = 5,
        c: float = 1.0, seed: int = 0, on_nonfinite: str = "exclude",
        return_info: bool = False, backend: str = "auto", pre=None):
    """Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021, "Manipulating the Byzantine",
    Algorithm 2). ``iters`` times: draw ``subsample`` coordinates (all of them when d is
    smaller), center the clients' values there on their mean, score each client by the square
    of its projection on the top right singular vector, and keep the floor(n - c f) lowest
    scores (ties to the lower index); the result is the mean (weighted by ``weights`` when
    given) of the clients kept every time. Requires n - c f >= 1; a ValueError when no client
    is kept every time.

    The coordinates come from numpy's Generator seeded with ``seed``, each draw sorted, so
    they are the same on every backend; only n x subsample values are gathered, and the
    singular vector comes from their n x n Gram matrix."""
    f = check("f", f, int, ge=0)
    subsample = check("subsample", subsample, int, ge=1)
    iters = check("iters", iters, int, ge=1)
    c = check("c", c, float, ge=0)
    seed = check("seed", seed, int, ge=0)
    ctx = AggregationContext("dnc", updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)

    def body():
        keep = math.floor(ctx.n - c * f)
        ctx.require(keep >= 1, f"n - c*f >= 1; got n={ctx.n}, c={c:g}, f={f}")
        rng = np.random.default_rng(seed)
        good = set(range(ctx.n))
        for _ in range(iters):
            coordinates = sampled_coordinates(ctx.updates.dimension, subsample, rng)
            M = gather(ctx, coordinates, ctx.active)
            if not np.isfinite(M).all():  # a non-finite client: one Gram pass excludes it
                in_play = list(ctx.in_play)
                ctx.gram()
                if ctx.in_play != in_play:
                    return body()
            top = float(np.abs(M).max())
            if top > 0:  # scaled by a power of two: the scores' squares stay in range
                M = np.ldexp(M, -math.frexp(top)[1])
            good &= set(solvers.lowest(spectral.dnc_scores(M), keep).tolist())
        if not good:
            raise ValueError(f"dnc: no client was kept by all {iters} draws (n={ctx.n}, "
                             f"{ctx.n - keep} dropped per draw); lower iters or c")
        chosen = sorted(ctx.active[i] for i in good)
        coefficients = ctx.expand(normalised(ctx, w, chosen), chosen)[ctx.active]
        # Over every client in play, the dropped ones with coefficient 0: the pass reads them
        # too, so a non-finite value outside the drawn coordinates is still found and reported.
        value = ctx.combine(coefficients)
        return value, ctx.info(chosen, coefficients=ctx.expand(coefficients))

    return result(ctx.run(body), return_info)
