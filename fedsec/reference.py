"""Float64 reference implementations, written straight from the papers' definitions.

They take a stacked float64 array X [n, d] and favour obviousness over speed: pairwise distances
are computed as sums of squared differences, medians with numpy. The backends are tested against
them (tests/, `fedsec selftest`); they are not meant for production use.
"""
from __future__ import annotations

import numpy as np


def _weights(n: int, weights) -> np.ndarray:
    a = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    return a / a.sum()


def mean(X: np.ndarray, weights=None) -> np.ndarray:
    """FedAvg (McMahan et al. 2017): sum_i a_i x_i with a the normalised weights."""
    return _weights(len(X), weights) @ X


def median(X: np.ndarray) -> np.ndarray:
    """Coordinate-wise median (Yin et al. 2018); even n: mean of the two middle values."""
    return np.median(X, axis=0)


def trimmed_mean(X: np.ndarray, beta: float) -> np.ndarray:
    """Coordinate-wise trimmed mean (Yin et al. 2018): drop floor(beta n) at each end."""
    n = len(X)
    k = int(np.floor(beta * n))
    return np.sort(X, axis=0)[k:n - k].mean(axis=0)


def pairwise_squared_distances(X: np.ndarray) -> np.ndarray:
    n = len(X)
    return np.array([[np.sum((X[i] - X[j]) ** 2) for j in range(n)] for i in range(n)])


def _krum_scores(D: np.ndarray, f: int, neighbours: int | None = None) -> np.ndarray:
    n = len(D)
    k = n - f - 2 if neighbours is None else neighbours
    return np.array([np.sort(np.delete(D[i], i))[:k].sum() for i in range(n)])


def krum_scores(X: np.ndarray, f: int) -> np.ndarray:
    """Blanchard et al. 2017: score(i) = sum of squared distances to the n - f - 2 closest."""
    return _krum_scores(pairwise_squared_distances(X), f)


def krum(X: np.ndarray, f: int, m: int = 1, weights=None) -> np.ndarray:
    """Krum / multi-Krum: the (weighted) mean of the m lowest-score updates, lower index first
    on ties."""
    chosen = np.sort(np.argsort(krum_scores(X, f), kind="stable")[:m])
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[chosen]
    return mean(X[chosen], w)


def geometric_median(X: np.ndarray, weights=None, nu: float = 1e-6, max_iter: int = 100,
                     tol: float = 1e-6) -> np.ndarray:
    """Smoothed Weiszfeld (Pillutla et al., RFA): from the weighted mean, z <- sum_i b_i x_i with
    b_i proportional to a_i / max(nu, ||z - x_i||), until the objective sum_i a_i ||z - x_i||
    changes by at most tol * objective, or max_iter times."""
    a = _weights(len(X), weights)
    z = a @ X
    objective = a @ np.linalg.norm(X - z, axis=1)
    for _ in range(max_iter):
        b = a / np.maximum(nu, np.linalg.norm(X - z, axis=1))
        z = (b / b.sum()) @ X
        new_objective = a @ np.linalg.norm(X - z, axis=1)
        if abs(objective - new_objective) <= tol * new_objective:
            break
        objective = new_objective
    return z


def bulyan(X: np.ndarray, f: int) -> np.ndarray:
    """Bulyan (El Mhamdi et al. 2018): theta = n - 2f updates chosen by Krum on the remaining set
    one at a time, then per coordinate the mean of the beta = theta - 2f chosen values closest to
    their median (dropping, on a tie, the larger value)."""
    n = len(X)
    D = pairwise_squared_distances(X)
    remaining, chosen = list(range(n)), []
    while len(chosen) < n - 2 * f:
        if len(remaining) == 1:
            chosen.append(remaining.pop())
            continue
        k = min(max(len(remaining) - f - 2, 1), len(remaining) - 1)
        scores = _krum_scores(D[np.ix_(remaining, remaining)], f, neighbours=k)
        chosen.append(remaining.pop(int(np.argsort(scores, kind="stable")[0])))
    S = np.sort(X[sorted(chosen)], axis=0)
    theta, beta = len(chosen), len(chosen) - 2 * f
    out = np.empty(X.shape[1])
    for c in range(X.shape[1]):
        s = S[:, c]
        med = np.median(s)
        lo, hi = 0, theta - 1
        for _ in range(theta - beta):  # drop the end farther from the median, the upper on ties
            if med - s[lo] > s[hi] - med:
                lo += 1
            else:
                hi -= 1
        out[c] = s[lo:hi + 1].mean()
    return out


def centered_clip(X: np.ndarray, tau: float, iters: int = 1, center=None) -> np.ndarray:
    """Centred clipping (Karimireddy et al. 2021): v <- v + (1/n) sum_i (x_i - v) min(1, tau /
    ||x_i - v||), iters times, from center or else from the medoid (smallest sum of distances)."""
    if center is None:
        distances = np.sqrt(pairwise_squared_distances(X))
        v = X[int(np.argmin(distances.sum(axis=1)))].copy()
    else:
        v = np.asarray(center, dtype=np.float64).copy()
    for _ in range(iters):
        diff = X - v
        norms = np.linalg.norm(diff, axis=1)
        with np.errstate(divide="ignore"):
            clip = np.minimum(1.0, tau / norms)
        v = v + (diff * clip[:, None]).mean(axis=0)
    return v
