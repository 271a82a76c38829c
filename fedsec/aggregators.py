"""Robust aggregators: fedsec's public drop-in API (conventions in docs/api.md).

Each rule is a few lines on top of the three streaming primitives (fedsec.backends) and the
n x n solvers (fedsec.solvers): the data is read once for the coordinate-wise rules and the
mean, twice (Gram matrix, then one combination) for the distance-based ones.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from . import solvers
from .backends import SelectOp
from .context import AggregationContext
from .params import check

__all__ = ["mean", "median", "trimmed_mean", "krum_scores", "krum", "geometric_median",
           "bulyan", "centered_clip"]


# --- parameter checks -----------------------------------------------------------------------------

def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights.cpu() if hasattr(weights, "cpu") else weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must be 1-D with one entry per client (n={n}); "
                         f"got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and >= 0; got {w.tolist()}")
    return w


def _normalised(ctx: AggregationContext, w: np.ndarray | None, clients: list[int]) -> np.ndarray:
    """The weights of ``clients`` scaled to sum to 1 (uniform when no weights were given)."""
    if w is None:
        return np.full(len(clients), 1.0 / len(clients))
    sub = w[clients]
    with np.errstate(over="ignore"):
        total = sub.sum()
    if np.isinf(total):  # finite weights whose sum overflows: the same proportions, smaller
        sub = sub / sub.max()
        total = sub.sum()
    ctx.require(total > 0, f"a positive total weight over the clients it uses {clients}; got 0")
    return sub / total


def _result(value_and_info: tuple, return_info: bool):
    return value_and_info if return_info else value_and_info[0]


# --- rules ----------------------------------------------------------------------------------------

def mean(updates, weights=None, *, on_nonfinite: str = "exclude", return_info: bool = False,
         backend: str = "auto"):
    """Weighted mean (FedAvg, McMahan et al. 2017); ``weights`` are e.g. sample counts."""
    ctx = AggregationContext("mean", updates, on_nonfinite, backend)
    w = _weights(weights, ctx.updates.n)

    def body():
        a = _normalised(ctx, w, ctx.active)
        value = ctx.combine(a)
        used = [c for c, x in zip(ctx.active, a) if x > 0]
        return value, ctx.info(used, coefficients=ctx.expand(a))

    return _result(ctx.run(body), return_info)


def median(updates, *, on_nonfinite: str = "exclude", return_info: bool = False,
           backend: str = "auto"):
    """Coordinate-wise median (Yin et al. 2018); an even count gives the mean of the two middle
    values."""
    ctx = AggregationContext("median", updates, on_nonfinite, backend)

    def body():
        return ctx.select(SelectOp.MEDIAN, 0), ctx.info(ctx.active)

    return _result(ctx.run(body), return_info)


def trimmed_mean(updates, beta: float, *, on_nonfinite: str = "exclude",
                 return_info: bool = False, backend: str = "auto"):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drop the k = floor(beta * n) smallest and
    k largest values of each coordinate and average the rest; 0 <= beta < 0.5."""
    beta = check("beta", beta, float, ge=0)
    if beta >= 0.5:
        raise ValueError(f"trimmed_mean needs 0 <= beta < 0.5; got beta={beta}")
    ctx = AggregationContext("trimmed_mean", updates, on_nonfinite, backend)

    def body():
        k = math.floor(beta * ctx.n)
        return ctx.select(SelectOp.TRIMMED_MEAN, k), ctx.info(ctx.active)

    return _result(ctx.run(body), return_info)


def _krum_checked(ctx: AggregationContext, f: int):
    gram = ctx.gram()
    ctx.require(ctx.n > 2 * f + 2, f"n > 2f + 2; got n={ctx.n}, f={f}")
    return gram, solvers.squared_distances(gram.matrix)


def krum_scores(updates, f: int, *, on_nonfinite: str = "exclude", return_info: bool = False,
                backend: str = "auto"):
    """Krum scores (Blanchard et al. 2017): for each client, the sum of squared distances to its
    n - f - 2 nearest other updates. Returns a float64 numpy array of n scores (inf for excluded
    clients, and for scores beyond the float64 range)."""
    f = check("f", f, int, ge=0)
    ctx = AggregationContext("krum_scores", updates, on_nonfinite, backend)

    def body():
        gram, D = _krum_checked(ctx, f)
        scores = ctx.expand(gram.squares(solvers.krum_scores(D, f)), fill=np.inf)
        return scores, ctx.info(ctx.active, scores=scores)

    return _result(ctx.run(body), return_info)


def krum(updates, f: int, m: int = 1, weights=None, *, on_nonfinite: str = "exclude",
         return_info: bool = False, backend: str = "auto"):
    """Krum (m=1) and multi-Krum (Blanchard et al. 2017): the mean of the m updates with the
    lowest Krum scores (weighted by ``weights`` when given; ties broken by lower index)."""
    f = check("f", f, int, ge=0)
    m = check("m", m, int, ge=1)
    ctx = AggregationContext("krum", updates, on_nonfinite, backend)
    w = _weights(weights, ctx.updates.n)

    def body():
        gram, D = _krum_checked(ctx, f)
        ctx.require(m <= ctx.n, f"m <= n; got m={m}, n={ctx.n}")
        scores = solvers.krum_scores(D, f)
        chosen = sorted(ctx.active[i] for i in solvers.lowest(scores, m))
        a = _normalised(ctx, w, chosen)
        value = ctx.combine(a, clients=chosen)
        return value, ctx.info(chosen, coefficients=ctx.expand(a, chosen),
                               scores=ctx.expand(gram.squares(scores), fill=np.inf))

    return _result(ctx.run(body), return_info)


def geometric_median(updates, weights=None, nu: float = 1e-6, max_iter: int = 100,
                     tol: float = 1e-7, *, on_nonfinite: str = "exclude",
                     return_info: bool = False, backend: str = "auto"):
    """Geometric median by smoothed Weiszfeld iterations (Pillutla et al., RFA): argmin_z
    sum_i a_i ||z - x_i|| with a the normalised weights. Stops when the estimated distance to
    the minimiser is at most tol times the weighted median distance from z to the clients
    (docs/api.md says what that guarantees). The iterations run on the n x n Gram matrix, so
    the data is read twice whatever the number of iterations."""
    nu = check("nu", nu, float, gt=0)
    max_iter = check("max_iter", max_iter, int, ge=1)
    tol = check("tol", tol, float, ge=0)
    ctx = AggregationContext("geometric_median", updates, on_nonfinite, backend)
    w = _weights(weights, ctx.updates.n)

    def body():
        gram = ctx.gram()
        a = _normalised(ctx, w, ctx.active)
        beta, iterations = solvers.weiszfeld(gram.matrix, a, gram.length(nu), max_iter, tol)
        value = ctx.combine(beta)
        used = [c for c, x in zip(ctx.active, a) if x > 0]
        return value, ctx.info(used, coefficients=ctx.expand(beta), iterations=iterations)

    return _result(ctx.run(body), return_info)


def bulyan(updates, f: int, *, on_nonfinite: str = "exclude", return_info: bool = False,
           backend: str = "auto"):
    """Bulyan (El Mhamdi et al. 2018): select theta = n - 2f updates by repeated Krum, then per
    coordinate average the theta - 2f selected values closest to their median; n >= 4f + 3."""
    f = check("f", f, int, ge=0)
    ctx = AggregationContext("bulyan", updates, on_nonfinite, backend)

    def body():
        gram = ctx.gram()
        ctx.require(ctx.n >= 4 * f + 3, f"n >= 4f + 3; got n={ctx.n}, f={f}")
        D = solvers.squared_distances(gram.matrix)
        theta = ctx.n - 2 * f
        chosen = sorted(ctx.active[i] for i in solvers.bulyan_selection(D, f, theta))
        value = ctx.select(SelectOp.CLOSEST_MEDIAN, theta - 2 * f, clients=chosen)
        scores = gram.squares(solvers.krum_scores(D, f))
        return value, ctx.info(chosen, scores=ctx.expand(scores, fill=np.inf))

    return _result(ctx.run(body), return_info)


def centered_clip(updates, tau: float, iters: int = 1, center=None, *,
                  on_nonfinite: str = "exclude", return_info: bool = False,
                  backend: str = "auto"):
    """Centred clipping (Karimireddy et al. 2021): v <- v + (1/n) sum_i (x_i - v) min(1, tau /
    ||x_i - v||), ``iters`` times, from ``center`` (one update in the same form, e.g. the last
    global model) or, when None, from the medoid update (ties within a relative 1e-6 go to the
    lowest index, docs/api.md)."""
    tau = check("tau", tau, float, gt=0)
    iters = check("iters", iters, int, ge=1)
    ctx = AggregationContext("centered_clip", updates, on_nonfinite, backend)
    start = ctx.center(center) if center is not None else None

    def body():
        gram = ctx.gram(start, medoid=start is None)
        beta = np.zeros(ctx.n)  # the start point: center itself, or the medoid client
        if start is None:
            beta[gram.medoid] = 1.0
        beta = solvers.centered_clip(gram.matrix, beta, gram.length(tau), iters)
        remainder = 1.0 - beta.sum()
        if start is None:
            # Centred on the first client in play: its coefficient takes the remainder.
            coefficients = beta.copy()
            coefficients[0] += remainder
            value = ctx.combine(coefficients)
        else:
            coefficients = beta
            value = ctx.combine(coefficients, center=start, center_coefficient=remainder)
        return value, ctx.info(ctx.active, coefficients=ctx.expand(coefficients), iterations=iters)

    return _result(ctx.run(body), return_info)
