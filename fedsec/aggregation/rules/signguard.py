"""SignGuard (Xu et al. 2022): norm filter, sign-statistics clustering, median-norm clipping."""
from __future__ import annotations

import math
import warnings

import numpy as np

from ...params import check
from ..context import AggregationContext
from ._common import normalised, result, weights_of
from ._coordinates import gather, sampled_coordinates
from ._points import combine_in_frame, frame


def sign_fractions(values: np.ndarray) -> np.ndarray:
    """[k, 3]: each row's fractions of positive, zero and negative entries."""
    return np.stack([(values > 0).mean(axis=1), (values == 0).mean(axis=1),
                     (values < 0).mean(axis=1)], axis=1)


def sign_features(fractions: np.ndarray) -> np.ndarray:
    """The clients' sign fractions ([n, 3]), each column divided by its largest entry (0 where
    that is 0), as the authors' code does."""
    top = fractions.max(axis=0)
    return np.divide(fractions, top, out=np.zeros_like(fractions), where=top > 0)


def largest_mean_shift_cluster(features: np.ndarray) -> list[int]:
    """MeanShift (bandwidth from sklearn's estimate_bandwidth, quantile 0.5 over at most 50
    samples with its fixed random_state; bin seeding; points far from every mode left out),
    the largest cluster; everyone when the features are all equal, when every point is left
    out, or when n < 2."""
    n = len(features)
    if n < 2:
        return list(range(n))
    from sklearn.cluster import MeanShift, estimate_bandwidth

    bandwidth = estimate_bandwidth(features, quantile=0.5, n_samples=50)
    if not bandwidth > 0:
        return list(range(n))
    with warnings.catch_warnings():  # too few distinct bins: every point seeds, as intended
        warnings.filterwarnings("ignore", message="Binning data failed")
        labels = MeanShift(bandwidth=bandwidth, bin_seeding=True,
                           cluster_all=False).fit(features).labels_
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        return list(range(n))
    return [int(i) for i in np.flatnonzero(labels == np.bincount(clustered).argmax())]


def signguard(updates, weights=None, *, lower: float = 0.1, upper: float = 3.0,
              fraction: float = 0.1, seed: int = 0, center=None, on_nonfinite: str = "exclude",
              return_info: bool = False, backend: str = "auto", pre=None):
    """SignGuard (Xu, Huang, Song, Lan, 2022, "SignGuard: Byzantine-robust federated learning
    through collaborative malicious gradient filtering", Algorithm 1, the plain variant):

    1. norm filter: with M the median of the ||g_i||, keep lower M < ||g_i|| < upper M;
    2. sign clustering: on floor(fraction * d) coordinates drawn from ``seed`` (numpy's
       Generator, the same on every backend; at least one), each client's fractions of
       positive, zero and negative values, each normalised by its largest over the clients,
       clustered by MeanShift; keep the largest cluster (largest_mean_shift_cluster);
    3. the result is the mean (weighted by ``weights`` when given) over the clients kept by
       both of g_i min(1, M / ||g_i||); the zero update when none is.

    g_i is the given vector x_i, or x_i - center when ``center`` (e.g. the global model) is
    given: the result is then center + the aggregated update. The authors' code draws a
    window of consecutive coordinates at a random start; a random subset is what their paper
    describes, and it samples every layer. Norms come from one Gram pass, the signs from the
    drawn coordinates alone, the result from one combination pass."""
    lower = check("lower", lower, float, ge=0)
    upper = check("upper", upper, float, gt=0)
    fraction = check("fraction", fraction, float, gt=0, le=1)
    seed = check("seed", seed, int, ge=0)
    if not lower < upper:
        raise ValueError(f"signguard needs lower < upper; got lower={lower:g}, upper={upper:g}")
    ctx = AggregationContext("signguard", updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)
    point = frame(ctx, center)

    def body():
        gram = ctx.gram(point)
        norms = np.sqrt(np.maximum(np.diag(gram.matrix), 0.0))  # in 2^exponent units
        median = float(np.median(norms))
        by_norm = {i for i in range(ctx.n) if lower * median < norms[i] < upper * median}
        d = ctx.updates.dimension
        coordinates = sampled_coordinates(d, max(1, math.floor(fraction * d)),
                                          np.random.default_rng(seed))
        offset = point if center is not None else None  # the origin: nothing to subtract
        # One client's values at a time (memory); mixed updates need every source's at once.
        batches = [ctx.active] if ctx.pre else [[row] for row in ctx.active]
        features = sign_features(np.concatenate(
            [sign_fractions(gather(ctx, coordinates, rows, offset)) for rows in batches]))
        kept = sorted(by_norm.intersection(largest_mean_shift_cluster(features)))
        clip = np.minimum(1.0, np.divide(median, norms, out=np.ones(ctx.n), where=norms > 0))
        chosen = [ctx.active[i] for i in kept]
        a = normalised(ctx, w, chosen) * clip[kept] if kept else np.zeros(0)
        value = combine_in_frame(ctx, a, chosen, point)
        return value, ctx.info(chosen, coefficients=ctx.expand(a, chosen))

    return result(ctx.run(body), return_info)
