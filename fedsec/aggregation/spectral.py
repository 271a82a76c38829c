"""Eigenproblems and subset searches on n x n matrices, in float64.

The covariance of client updates lives in R^{d x d}, but its nonzero spectrum is that of an
n x n matrix built from the Gram matrix G (G_ij = <x_i - r, x_j - r>): with weights a
(summing to 1) and z_i = x_i - sum_j a_j x_j, the weighted covariance sum_i a_i z_i z_i^T has
the nonzero eigenvalues of S = diag(sqrt a) K diag(sqrt a), K_ij = <z_i, z_j>, and the
eigenvector of S for the eigenvalue lambda, u, gives the covariance's eigenvector
v = sum_i sqrt(a_i) u_i z_i / sqrt(lambda), whose projections z_i . v are
(K (sqrt(a) u))_i / sqrt(lambda). So DnC, CAF and SMEA run on n x n numbers (DnC on the Gram
matrix of its subsampled coordinates); MDA's and SMEA's subsets are searched on them too.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np

# Exact subset searches (MDA, SMEA) score every m-subset while the subsets' m x m matrices hold
# at most this many entries in all, C(n, m) m^2 (about 0.1 s for MDA, 1 s for SMEA here);
# beyond, a greedy search (best_subset).
EXACT_ENTRIES = 10**7
# Subsets scored per batch: the batch's gathered sub-matrices stay near 32 MiB.
_BATCH_ENTRIES = 1 << 22


def centered_gram(G: np.ndarray, a: np.ndarray) -> np.ndarray:
    """K_ij = <z_i, z_j> for z_i = y_i - sum_k a_k y_k: (I - 1 a^T) G (I - a 1^T)."""
    Ga = G @ a
    return G - Ga[:, None] - Ga[None, :] + a @ Ga


def top_eigenpair(S: np.ndarray) -> tuple[float, np.ndarray]:
    """The largest eigenvalue of the symmetric matrix S (clamped at 0) and a unit eigenvector."""
    values, vectors = np.linalg.eigh((S + S.T) * 0.5)
    return max(float(values[-1]), 0.0), vectors[:, -1]


def covariance_top(G: np.ndarray, a: np.ndarray) -> tuple[float, np.ndarray]:
    """(lambda_max, projections): the largest eigenvalue of the a-weighted covariance of the
    points whose Gram matrix is G, and every point's projection z_i . v on its unit
    eigenvector v (zeros when lambda_max is 0). Points with a_i = 0 are projected too."""
    K = centered_gram(G, a)
    root = np.sqrt(a)
    lam, u = top_eigenpair(root[:, None] * K * root[None, :])
    if lam == 0.0:
        return 0.0, np.zeros(len(a))
    return lam, K @ (root * u) / math.sqrt(lam)


def dnc_scores(M: np.ndarray) -> np.ndarray:
    """Divide-and-Conquer's outlier scores (Shejwalkar & Houmansadr 2021, Alg. 2) of the rows
    of M (the clients' values at the subsampled coordinates): ((m_i - mu) . v)^2 with mu the
    mean row and v the top right singular vector of the centered M, i.e. the covariance's top
    eigenvector (covariance_top with uniform weights, on the Gram matrix of M's rows)."""
    n = M.shape[0]
    centered = M - M.mean(axis=0)
    _, projections = covariance_top(centered @ centered.T, np.full(n, 1.0 / n))
    return projections ** 2


def caf(G: np.ndarray, f: int) -> tuple[np.ndarray, int]:
    """The covariance-bound agnostic filter as ByzFL defines it (Allouah, Guerraoui, Stephan,
    ICML 2025), with exact eigenpairs. From weights c = 1, while sum(c) > n - 2f: mu_c is the
    c-weighted mean and (lambda, v) the top eigenpair of the c-weighted covariance; keep mu_c
    if lambda is the smallest seen so far (the first on ties); tau_i = ((x_i - mu_c) . v)^2
    for every point and c_i <- c_i (1 - tau_i / max_j tau_j). Returns the coefficients of the
    kept mean (they sum to 1) and the iterations run.

    f = 0 runs no iteration: the mean. A covariance that is 0 (every weighted point on the
    mean) ends the loop: no mean can have a smaller one. At most 4n iterations (each one
    zeroes the weight of the point farthest along v, unless that point's weight is 0 already).
    """
    n = G.shape[0]
    c = np.ones(n)
    best, best_lambda = c / n, math.inf
    iterations = 0
    while c.sum() > n - 2 * f and iterations < 4 * n:
        iterations += 1
        a = c / c.sum()
        lam, projections = covariance_top(G, a)
        if lam < best_lambda:
            best, best_lambda = a, lam
        tau = projections ** 2
        if lam == 0.0 or tau.max() == 0.0:
            break
        c = c * (1.0 - tau / tau.max())
    return best, iterations


def subset_diameters(D: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """max_{i, j in S} D_ij of each row S of ``subsets`` ([B, m] indices): MDA's score."""
    return D[subsets[:, :, None], subsets[:, None, :]].reshape(len(subsets), -1).max(axis=1)


def subset_max_eigenvalues(G: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """lambda_max of the covariance (1/m) sum_{i in S} (x_i - mu_S)(x_i - mu_S)^T of each row S
    of ``subsets`` ([B, m] indices): SMEA's score, from each subset's centered sub-Gram."""
    m = subsets.shape[1]
    sub = G[subsets[:, :, None], subsets[:, None, :]]
    rows = sub.mean(axis=2, keepdims=True)
    K = sub - rows - np.swapaxes(rows, 1, 2) + rows.mean(axis=1, keepdims=True)
    K = (K + np.swapaxes(K, 1, 2)) * 0.5
    return np.maximum(np.linalg.eigvalsh(K / m)[:, -1], 0.0)


def best_subset(n: int, m: int, score: Callable[[np.ndarray], np.ndarray],
                drop: Callable[[list[int]], int] | None = None) -> tuple[list[int], bool]:
    """The m-subset of range(n) with the smallest ``score`` (a function of a [B, m] array of
    index rows, ascending within each row, returning B scores), and whether it is exact.

    Exact while C(n, m) m^2 <= EXACT_ENTRIES: every subset is scored and the first smallest in
    itertools.combinations order wins. Beyond, greedy: from all n, n - m times remove the
    position ``drop(remaining)`` names, by default the point whose removal leaves the smallest
    score (the lowest index on ties; exact for m = n - 1)."""
    if m >= n:
        return list(range(n)), True
    if math.comb(n, m) * m * m <= EXACT_ENTRIES:
        batch = max(1, _BATCH_ENTRIES // (m * m))
        combos = itertools.combinations(range(n), m)
        best, best_score = None, math.inf
        while True:
            chunk = np.array(list(itertools.islice(combos, batch)), dtype=np.intp).reshape(-1, m)
            if len(chunk) == 0:
                return list(best), True
            scores = score(chunk)
            k = int(np.argmin(scores))
            if scores[k] < best_score or best is None:
                best, best_score = chunk[k].tolist(), scores[k]

    def smallest_after(remaining: list[int]) -> int:
        candidates = np.array([remaining[:k] + remaining[k + 1:] for k in range(len(remaining))],
                              dtype=np.intp)
        return int(np.argmin(score(candidates)))

    remaining = list(range(n))
    while len(remaining) > m:
        remaining.pop((drop or smallest_after)(remaining))
    return remaining, False


def farthest_pair_drop(D: np.ndarray) -> Callable[[list[int]], int]:
    """MDA's greedy step: of the farthest pair among ``remaining`` (the first in row order),
    the endpoint with the larger sum of squared distances to the others (the first on ties).
    Only removing an endpoint of that pair can shrink the diameter; the sums pick the one far
    from the rest, also when several outliers share their farthest honest point."""
    def drop(remaining: list[int]) -> int:
        sub = D[np.ix_(remaining, remaining)]
        i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
        sums = sub.sum(axis=1)
        return int(i) if sums[i] >= sums[j] else int(j)
    return drop
