"""The small n x n part of the Gram-based rules, in float64.

Every function takes the centered Gram matrix G (G_ij = <x_i - r, x_j - r>, or of the updates
scaled by a power of two: see Gram) of the clients in play and works on coefficient vectors beta
that stand for the point r + sum_k beta_k (x_k - r).
The data is never touched here: iterations cost O(n^2), whatever the model size.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Gram(NamedTuple):
    """A centered Gram matrix of the clients in play as the rules use it.

    ``matrix`` is the Gram matrix of 2^exponent (x_i - r): exponent is 0 unless float64
    products of the updates would over- or underflow, so lengths in the updates' units are
    scaled by 2^exponent to compare with it (``length``), and squared lengths computed from it
    scaled back (``squares``). ``medoid`` is the medoid's position, when it was asked for."""

    matrix: np.ndarray
    exponent: int = 0
    medoid: int | None = None

    def length(self, value: float) -> float:
        return math.ldexp(value, self.exponent)

    def squares(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # inf beyond the float64 range
            return np.ldexp(values, -2 * self.exponent)


def squared_distances(G: np.ndarray) -> np.ndarray:
    """||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij, clamped at 0 (rounding can make it negative).

    G is symmetrised first so D is exactly symmetric: Krum scores of mutual nearest neighbours
    then tie exactly, and the lower index wins on every backend."""
    g = np.diag(G)
    D = g[:, None] + g[None, :] - (G + G.T)
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D


# Relative accuracy the pairwise distances must have, against the typical distance of each row.
GRAM_TOLERANCE = 1e-4


def gram_is_accurate(G: np.ndarray, error: tuple[float, float],
                     tolerance: float = GRAM_TOLERANCE) -> bool:
    """Whether a Gram matrix whose entries are within ``e ||y_i|| ||y_j|| + a``, (e, a) = error,
    gives every client's distances to within ``tolerance`` of its median distance to the others.

    An entry error of e ||y_i|| ||y_j|| + a moves D_ij by at most 2e (G_ii + G_jj) + 4a. The
    check is row-wise against medians, so a far-away attacker (large G_ii, but equally large
    distances) passes, while a reference point far from most clients (large G_ii, small
    distances) fails, and so do products that underflowed (a large against the distances). A
    matrix with an entry that overflowed is not accurate.
    """
    if not np.isfinite(G).all():
        return False
    n = G.shape[0]
    if n < 2:
        return True
    relative, absolute = error
    g = np.diag(G)
    D = squared_distances(G)
    off = ~np.eye(n, dtype=bool)
    typical_distance = np.median(D[off].reshape(n, n - 1), axis=1)
    typical_norm = np.median(np.broadcast_to(g, (n, n))[off].reshape(n, n - 1), axis=1)
    bound = 2.0 * relative * (g + typical_norm) + 4.0 * absolute
    return bool(np.all(bound <= tolerance * typical_distance))


def rescaled_exponent(G: np.ndarray, error: tuple[float, float], exponent: int) -> int | None:
    """The exponent of the next float64 pass when the one at ``exponent`` gave G that is not
    accurate, or None when its range is not what limits it (rounding is: scaling by a power of
    two does not change that).

    An entry that overflowed: 2^-512 smaller (updates up to the float64 maximum need two such
    steps). Products that underflowed (accurate but for the absolute error term): the exponent
    that brings the largest squared norm near 1, far from both ends of the range; when every
    product underflowed (G is 0: every difference below 2^-537, or none at all), 2^600 larger,
    which makes any nonzero difference at least 2^-474, its products normal."""
    if not np.isfinite(G).all():
        return exponent - 512
    if gram_is_accurate(G, error) or not gram_is_accurate(G, (error[0], 0.0)):
        return None
    top = float(np.diag(G).max())
    if top == 0:
        return exponent + 600 if exponent == 0 else None
    shift = -(math.frexp(top)[1] // 2)
    return exponent + shift if shift > 0 else None


def distance_errors(G: np.ndarray, error: tuple[float, float]) -> np.ndarray:
    """Bounds of |error of D_ij| for D = squared_distances(G), G's entries within
    e ||y_i|| ||y_j|| + a: 2e (G_ii + G_jj) + 4a, plus the rounding of D's own float64 sum."""
    relative, absolute = error
    g = np.diag(G)
    return 2.0 * (relative + 2.0**-53) * (g[:, None] + g[None, :]) + 4.0 * absolute


def distances_to_point(G: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """||x_i - z|| for z = r + sum_k beta_k (x_k - r): sqrt(G_ii - 2 (G beta)_i + beta' G beta)."""
    Gb = G @ beta
    sq = np.diag(G) - 2.0 * Gb + beta @ Gb
    return np.sqrt(np.maximum(sq, 0.0))


def krum_scores(D: np.ndarray, f: int) -> np.ndarray:
    """Blanchard et al. 2017: sum of the squared distances to the n - f - 2 nearest others."""
    n = D.shape[0]
    neighbours = n - f - 2
    others = D + np.diag(np.full(n, np.inf))
    return np.sort(others, axis=1)[:, :neighbours].sum(axis=1)


def lowest(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m lowest scores, ties broken by the lower index."""
    return np.argsort(scores, kind="stable")[:m]


def bulyan_selection(D: np.ndarray, f: int, theta: int) -> list[int]:
    """El Mhamdi et al. 2018: pick theta clients by Krum repeatedly on the remaining set R, with
    min(max(|R| - f - 2, 1), |R| - 1) neighbours (Krum's own n - f - 2, kept meaningful once the
    set is small)."""
    remaining = list(range(D.shape[0]))
    chosen = []
    while len(chosen) < theta:
        if len(remaining) == 1:
            chosen.append(remaining.pop())
            break
        sub = D[np.ix_(remaining, remaining)]
        neighbours = min(max(len(remaining) - f - 2, 1), len(remaining) - 1)
        others = sub + np.diag(np.full(len(remaining), np.inf))
        scores = np.sort(others, axis=1)[:, :neighbours].sum(axis=1)
        chosen.append(remaining.pop(int(lowest(scores, 1)[0])))
    return chosen


def weighted_median(values: np.ndarray, a: np.ndarray) -> float:
    """The lower weighted median: the smallest value with at least half the weight a at or
    below it."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(a[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


# Coefficient changes this small are rounding: the iterate no longer moves.
STATIONARY = 4 * 2.0**-52


def weiszfeld(G: np.ndarray, a: np.ndarray, nu: float, max_iter: int, tol: float):
    """Smoothed Weiszfeld iterations of Pillutla et al. (RFA) for argmin_z sum_i a_i ||z - x_i||.

    Starts at the weighted mean; each step sets beta proportional to a_i / max(nu, ||z - x_i||).
    Stops when the step no longer moves z (beta changes by rounding only), or when
    ``converged`` says the remaining distance to the minimiser is at most tol times the weighted
    median distance from z to the clients. Returns (beta, iterations).
    """
    beta = a.copy()
    dist = distances_to_point(G, beta)
    previous = None
    iterations = 0
    for iterations in range(1, max_iter + 1):
        b = a / np.maximum(nu, dist)
        new_beta = b / b.sum()
        delta = new_beta - beta
        step = math.sqrt(max(float(delta @ G @ delta), 0.0))
        beta = new_beta
        dist = distances_to_point(G, beta)
        target = tol * weighted_median(dist, a)
        if np.abs(delta).max() <= STATIONARY or converged(step, previous, target):
            break
        previous = step
    return beta, iterations


def converged(step: float, previous: float | None, target: float) -> bool:
    """Whether the remaining distance to the limit is at most ``target`` if every later step is
    at most q times the one before, q = step / previous (Weiszfeld's linear convergence): the
    steps left then sum to at most step q / (1 - q)."""
    if previous is None or not step < previous:
        return False
    q = step / previous
    return step * q <= target * (1.0 - q)


def centered_clip(G: np.ndarray, beta: np.ndarray, tau: float, iters: int) -> np.ndarray:
    """Karimireddy et al. 2021: v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||).

    With v = r + sum_k beta_k y_k, x_i - v has coefficients e_i - beta, so each step is
    beta <- beta + mean_i (e_i - beta) * clip_i.
    """
    n = G.shape[0]
    for _ in range(iters):
        dist = distances_to_point(G, beta)
        with np.errstate(divide="ignore"):
            clip = np.minimum(1.0, tau / dist)
        beta = beta + (clip - clip.sum() * beta) / n
    return beta


# Sums of distances within this relative margin of the smallest tie for the medoid.
MEDOID_TIE = 1e-6


def medoid(D: np.ndarray, errors: np.ndarray | None = None) -> int | None:
    """The medoid: the lowest-index client whose sum of distances to the others is within a
    relative MEDOID_TIE of the smallest sum (docs/api.md).

    With ``errors`` (bounds of |error of D_ij|, distance_errors) the rule is applied to every
    D the bounds allow: the answer is the client all of them give, or None when they disagree
    (a tie the matrix is not precise enough to decide). Without, D is taken as exact."""
    sums = np.sqrt(D).sum(axis=1)
    if errors is None:
        return int(np.flatnonzero(sums <= sums.min() * (1.0 + MEDOID_TIE))[0])
    # |sqrt(D') - sqrt(D)| for |D' - D| <= e, D' >= 0: at most (D + e - max(D - e, 0)) /
    # (sqrt(D + e) + sqrt(max(D - e, 0))), written so that it does not cancel.
    lower = np.maximum(D - errors, 0.0)
    spread = np.sqrt(D + errors) + np.sqrt(lower)
    root_errors = np.divide(D + errors - lower, spread, out=np.zeros_like(D), where=spread > 0)
    np.fill_diagonal(root_errors, 0.0)
    margin = root_errors.sum(axis=1) + D.shape[0] * 2.0**-52 * sums  # and the sums' rounding
    low, high = sums - margin, sums + margin
    # Possibly tied with the smallest sum, and surely so.
    possible = np.flatnonzero(low <= high.min() * (1.0 + MEDOID_TIE))
    first = int(possible[0])
    if len(possible) == 1 or high[first] <= low.min() * (1.0 + MEDOID_TIE):
        return first
    return None


def cosine_similarities(G: np.ndarray) -> np.ndarray:
    """cos(y_i, y_j) = G_ij / (||y_i|| ||y_j||) of the vectors whose Gram matrix is G, clipped
    to [-1, 1] (rounding); a zero vector has cosine 0 with every vector, itself included."""
    norms = np.sqrt(np.maximum(np.diag(G), 0.0))
    denominator = np.outer(norms, norms)
    cosines = np.divide(G, denominator, out=np.zeros_like(G), where=denominator > 0)
    return np.clip(cosines, -1.0, 1.0)


def cosine_distances(G: np.ndarray) -> np.ndarray:
    """1 - cos(y_i, y_j) (in [0, 2]), with 0 on the diagonal: the precomputed metric of the
    clustering rules (FLAME, clipped clustering)."""
    D = 1.0 - cosine_similarities(G)
    np.fill_diagonal(D, 0.0)
    return D
