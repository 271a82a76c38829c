"""Float64 NumPy references for fedsec's aggregators, written from the papers' definitions.

Each takes a stacked float64 array ``X`` of shape [n, d] (the references may stack; the library
must not) and favours being obviously equal to the paper's formula over speed. They share
nothing with the library's implementations (nothing here imports the rest of fedsec); the tests
and `fedsec selftest` compare every backend with them.
"""
from __future__ import annotations

import numpy as np


def _normalised(n: int, weights) -> np.ndarray:
    a = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    return a / a.sum()


def mean(X, weights=None):
    """FedAvg (McMahan et al. 2017): sum_i a_i x_i, a_i = w_i / sum_j w_j (uniform by default)."""
    return _normalised(len(X), weights) @ X


def median(X):
    """Coordinate-wise median (Yin et al. 2018); an even count gives the mean of the two middle
    values (numpy's convention)."""
    return np.median(X, axis=0)


def trimmed_mean(X, beta):
    """Coordinate-wise trimmed mean (Yin et al. 2018): sort each coordinate, drop the
    k = floor(beta * n) smallest and k largest values, average the rest."""
    n = len(X)
    k = int(np.floor(beta * n))
    return np.sort(X, axis=0)[k:n - k].mean(axis=0)


def pairwise_sq_distances(X):
    """D[i, j] = ||x_i - x_j||^2 computed directly as ((x_i - x_j) ** 2).sum() (no Gram trick)."""
    n = len(X)
    D = np.zeros((n, n))
    for i in range(n):
        D[i] = ((X[i] - X) ** 2).sum(axis=1)
    return D


def _krum_scores_from(D, f):
    """Score of i: sum of the squared distances to its n - f - 2 nearest others."""
    n = len(D)
    others = [np.sort(np.delete(D[i], i)) for i in range(n)]
    return np.array([o[:n - f - 2].sum() for o in others])


def krum_scores(X, f, D=None):
    """Krum scores (Blanchard et al. 2017, "Machine learning with adversaries"): for each i,
    sum over the n - f - 2 updates closest to x_i (i excluded) of ||x_i - x_j||^2."""
    return _krum_scores_from(pairwise_sq_distances(X) if D is None else D, f)


def krum_selection(X, f, m=1, D=None):
    """The m lowest Krum scores, ties broken by the lower index (stable argsort), ascending."""
    return sorted(np.argsort(krum_scores(X, f, D), kind="stable")[:m].tolist())


def krum(X, f, m=1, weights=None, D=None):
    """Krum (m=1) and multi-Krum (Blanchard et al. 2017): the (weighted) mean of the m updates
    with the lowest Krum scores."""
    chosen = krum_selection(X, f, m, D)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[chosen]
    return mean(X[chosen], w)


def geometric_median(X, weights=None, nu=1e-6, max_iter=100, tol=1e-7, return_details=False):
    """Smoothed Weiszfeld (Pillutla et al., "Robust aggregation for federated learning", RFA):
    argmin_z sum_i a_i ||z - x_i||. From the weighted mean, z <- sum_i b_i x_i with
    b_i proportional to a_i / max(nu, ||z - x_i||). Stops after max_iter iterations, or when b
    changes by at most 4 * 2^-52 per entry (z no longer moves), or when, with m the step just
    taken and q = m / (the step before) < 1, m q / (1 - q) <= tol * s: s the lower weighted
    median (weights a) of the distances ||z - x_i|| (docs/api.md).

    With return_details: (z, b, iterations), b the coefficients of the returned z."""
    a = _normalised(len(X), weights)
    b = a.copy()
    z = b @ X
    dist = np.linalg.norm(X - z, axis=1)
    previous = None
    iterations = 0
    for iterations in range(1, max_iter + 1):
        new_b = a / np.maximum(nu, dist)
        new_b = new_b / new_b.sum()
        new_z = new_b @ X
        step = np.linalg.norm(new_z - z)
        stationary = np.abs(new_b - b).max() <= 4 * 2.0**-52
        b, z = new_b, new_z
        dist = np.linalg.norm(X - z, axis=1)
        order = np.argsort(dist, kind="stable")
        cumulative = np.cumsum(a[order])
        s = dist[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
        if stationary or (previous is not None and step < previous
                          and step * (step / previous) <= tol * s * (1 - step / previous)):
            break
        previous = step
    return (z, b, iterations) if return_details else z


def geometric_median_objective(X, z, weights=None):
    """sum_i a_i ||z - x_i||."""
    return _normalised(len(X), weights) @ np.linalg.norm(X - z, axis=1)


def bulyan_selection(X, f, D=None):
    """Bulyan's first stage (El Mhamdi et al. 2018, "The hidden vulnerability of distributed
    learning in Byzantium"): theta = n - 2f updates chosen by Krum repeatedly, each time on the
    remaining set R with min(max(|R| - f - 2, 1), |R| - 1) neighbours (docs/api.md), lowest index
    on ties. Returns the chosen indices ascending."""
    D = pairwise_sq_distances(X) if D is None else D
    remaining = list(range(len(X)))
    chosen = []
    for _ in range(len(X) - 2 * f):
        k = min(max(len(remaining) - f - 2, 1), len(remaining) - 1)
        sub = D[np.ix_(remaining, remaining)]
        scores = [np.sort(np.delete(sub[i], i))[:k].sum() for i in range(len(remaining))]
        chosen.append(remaining.pop(int(np.argsort(scores, kind="stable")[0])))
    return sorted(chosen)


def closest_to_median_mean(S, beta):
    """Per coordinate of S [theta, d]: the mean of the beta values closest to the coordinate's
    median; on a distance tie the larger value is dropped (kept first: smaller distance, then
    smaller value)."""
    med = np.median(S, axis=0)
    order = np.lexsort((S, np.abs(S - med)), axis=0)  # primary key: distance; then the value
    kept = np.take_along_axis(S, order[:beta], axis=0)
    return kept.mean(axis=0)


def bulyan(X, f, D=None):
    """Bulyan (El Mhamdi et al. 2018): select theta = n - 2f updates by repeated Krum, then per
    coordinate average the beta = theta - 2f selected values closest to their median."""
    S = X[bulyan_selection(X, f, D)]
    return closest_to_median_mean(S, len(S) - 2 * f)


def medoid(X, D=None):
    """The update with the smallest sum of (non-squared) distances to the others; sums within
    a relative 1e-6 of the smallest are ties, won by the lowest index (docs/api.md)."""
    D = pairwise_sq_distances(X) if D is None else D
    sums = np.sqrt(D).sum(axis=1)
    return int(np.flatnonzero(sums <= sums.min() * (1 + 1e-6))[0])


def centered_clip(X, tau, iters=1, center=None, D=None):
    """Centred clipping (Karimireddy et al. 2021, "Learning from history for Byzantine robust
    optimization"): v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||), iters times, from
    ``center`` or the medoid update."""
    n = len(X)
    v = X[medoid(X, D)].copy() if center is None else np.asarray(center, dtype=np.float64).copy()
    for _ in range(iters):
        diff = X - v
        dist = np.linalg.norm(diff, axis=1)
        with np.errstate(divide="ignore"):
            scale = np.minimum(1.0, tau / dist)  # dist 0: tau / 0 = inf, scale 1
        v = v + (diff * scale[:, None]).sum(axis=0) / n
    return v


# --- pre-aggregators: the matrices M of Y' = M Y (+ the remainder on the center) ----------------

def nnm_matrix(X, f):
    """Nearest-neighbour mixing (Allouah et al., AISTATS 2023, "Fixing by mixing"): row i
    averages the n - f updates nearest x_i, x_i itself included; neighbours ordered by
    distance, ties to the lower index, x_i itself first."""
    n = len(X)
    D = pairwise_sq_distances(X)
    M = np.zeros((n, n))
    for i in range(n):
        order = [i] + sorted((j for j in range(n) if j != i), key=lambda j: (D[i, j], j))
        M[i, order[:n - f]] = 1.0 / (n - f)
    return M


def bucketing_matrix(n, s, seed):
    """Bucketing (Karimireddy, He, Jaggi, ICLR 2022): pi = default_rng(seed).permutation(n); bucket
    b holds pi[b s], ..., pi[b s + s - 1] (the last ceil(n / s)-th one what is left) and its row
    averages them."""
    pi = np.random.default_rng(seed).permutation(n)
    buckets = [pi[start:start + s] for start in range(0, n, s)]
    M = np.zeros((len(buckets), n))
    for b, members in enumerate(buckets):
        M[b, members] = 1.0 / len(members)
    return M


def _norms_around(X, center):
    c = np.zeros(X.shape[1]) if center is None else np.asarray(center, dtype=np.float64)
    return np.linalg.norm(X - c, axis=1)


def arc_matrix(X, f, center=None):
    """Adaptive robust clipping (Allouah et al. 2024): k = floor(2 (f / n) (n - f)); the k
    largest norms ||x_i - center|| are clipped to the (k + 1)-th largest, t:
    diag(min(1, t / ||x_i - center||))."""
    n = len(X)
    norms = _norms_around(X, center)
    k = int(np.floor(2 * f * (n - f) / n))
    t = sorted(norms, reverse=True)[k]
    return np.diag([1.0 if v <= t else t / v for v in norms])


def clipping_matrix(X, c, center=None):
    """Static clipping: diag(min(1, c / ||x_i - center||))."""
    return np.diag([1.0 if v <= c else c / v for v in _norms_around(X, center)])


def mixed(X, M, center=None):
    """The mixed updates M X + (1 - M 1) center (center None: zero)."""
    out = M @ X
    if center is not None:
        out += (1.0 - M.sum(axis=1))[:, None] * np.asarray(center, dtype=np.float64)
    return out


def meamed(X, f):
    """Mean around the median (Xie, Koyejo, Gupta 2018, "Generalized Byzantine-tolerant SGD"):
    per coordinate, the mean of the n - f values closest to the median (on a distance tie the
    larger value is dropped)."""
    return closest_to_median_mean(X, len(X) - f)
