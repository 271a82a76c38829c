"""FLAME (Nguyen et al. 2022): HDBSCAN on cosine distances, median-norm clipping, noise."""
from __future__ import annotations

import math

import numpy as np
import torch

from ...params import check
from .. import solvers
from ..context import AggregationContext
from ..updates import UpdateSet
from ._common import normalised, result, weights_of
from ._points import combine_in_frame, frame


def majority_cluster(distances: np.ndarray) -> list[int]:
    """FLAME's admitted clients: HDBSCAN (min_cluster_size n/2 + 1, min_samples 1, a single
    cluster allowed) on the precomputed distances, the largest cluster; everyone when HDBSCAN
    finds none (all points noise) or n < 2 (HDBSCAN needs two points)."""
    n = len(distances)
    if n < 2:
        return list(range(n))
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(min_cluster_size=n // 2 + 1, min_samples=1, metric="precomputed",
                     allow_single_cluster=True, copy=True).fit(distances).labels_
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        return list(range(n))
    largest = np.bincount(clustered).argmax()
    return [int(i) for i in np.flatnonzero(labels == largest)]


def _add_noise(updates: UpdateSet, value, sigma: float, seed: int) -> None:
    """value += N(0, sigma^2) in place, block after block: the draws are numpy's float32
    standard normals from ``seed``, in the flattened update's order, on every backend."""
    rng = np.random.default_rng(seed)
    for block in updates.blocks:
        noise = (rng.standard_normal(block.size, dtype=np.float32).astype(np.float64)
                 * sigma).reshape(block.shape)
        target = value[block.key] if updates.form == "state_dict" else value
        if isinstance(target, torch.Tensor):
            target.add_(torch.from_numpy(noise).to(device=target.device))
        else:
            target += noise.astype(target.dtype)


def flame(updates, weights=None, *, noise_lambda: float = 0.001, seed: int = 0, center=None,
          on_nonfinite: str = "exclude", return_info: bool = False, backend: str = "auto",
          pre=None):
    """FLAME (Nguyen et al., USENIX Security 2022, "FLAME: Taming backdoors in federated
    learning", Algorithm 1): HDBSCAN (min_cluster_size n/2 + 1, min_samples 1) on the
    pairwise cosine distances 1 - cos(g_i, g_j) admits the largest cluster (everyone when
    there is none); with S the median of all ||g_i||, each admitted g_i is clipped to
    g_i min(1, S / ||g_i||); the result is their mean (weighted by ``weights`` when given)
    plus Gaussian noise of standard deviation noise_lambda * S, drawn from ``seed`` (the
    same on every backend).

    g_i is the given vector x_i, or x_i - center when ``center`` (e.g. the global model) is
    given: the result is then center + the aggregated update + the noise.
    ``info.coefficients`` holds the c_i of center + sum_i c_i g_i (before the noise)."""
    noise_lambda = check("noise_lambda", noise_lambda, float, ge=0)
    seed = check("seed", seed, int, ge=0)
    ctx = AggregationContext("flame", updates, on_nonfinite, backend, pre)
    w = weights_of(weights, ctx.updates.n, ctx.pre)
    point = frame(ctx, center)

    def body():
        gram = ctx.gram(point)
        norms = np.sqrt(np.maximum(np.diag(gram.matrix), 0.0))  # in 2^exponent units
        admitted = majority_cluster(solvers.cosine_distances(gram.matrix))
        bound = float(np.median(norms))
        clip = np.minimum(1.0, np.divide(bound, norms, out=np.ones(ctx.n), where=norms > 0))
        chosen = [ctx.active[i] for i in admitted]
        a = normalised(ctx, w, chosen) * clip[admitted]
        value = combine_in_frame(ctx, a, chosen, point)
        sigma = noise_lambda * math.ldexp(bound, -gram.exponent)
        if sigma > 0:
            _add_noise(ctx.updates, value, sigma, seed)
        return value, ctx.info(chosen, coefficients=ctx.expand(a, chosen))

    return result(ctx.run(body), return_info)
