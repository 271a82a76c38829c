"""The small n x n part of the Gram-based rules, in float64.

Every function takes the centred Gram matrix G (G_ij = <x_i - r, x_j - r>) of the clients in
play and works on coefficient vectors beta that stand for the point r + sum_k beta_k (x_k - r).
The data is never touched here: iterations cost O(n^2), whatever the model size.
"""
from __future__ import annotations

import numpy as np


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


def gram_is_accurate(G: np.ndarray, error: float, tolerance: float = GRAM_TOLERANCE) -> bool:
    """Whether a Gram matrix whose entries are within ``error * ||y_i|| ||y_j||`` gives every
    client's distances to within ``tolerance`` of its median distance to the others.

    An entry error of e ||y_i|| ||y_j|| moves D_ij by at most 2e (G_ii + G_jj). The check is
    row-wise against medians, so a far-away attacker (large G_ii, but equally large distances)
    passes, while a reference point far from most clients (large G_ii, small distances) fails.
    """
    n = G.shape[0]
    if n < 2:
        return True
    g = np.diag(G)
    D = squared_distances(G)
    off = ~np.eye(n, dtype=bool)
    typical_distance = np.median(D[off].reshape(n, n - 1), axis=1)
    typical_norm = np.median(np.broadcast_to(g, (n, n))[off].reshape(n, n - 1), axis=1)
    return bool(np.all(2.0 * error * (g + typical_norm) <= tolerance * typical_distance))


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


def weiszfeld(G: np.ndarray, a: np.ndarray, nu: float, max_iter: int, tol: float):
    """Smoothed Weiszfeld iterations of Pillutla et al. (RFA) for argmin_z sum_i a_i ||z - x_i||.

    Starts at the weighted mean; each step sets beta proportional to a_i / max(nu, ||z - x_i||);
    stops when the objective changes by at most tol * objective. Returns (beta, iterations).
    """
    beta = a.copy()
    objective = float(a @ distances_to_point(G, beta))
    iterations = 0
    for iterations in range(1, max_iter + 1):
        b = a / np.maximum(nu, distances_to_point(G, beta))
        beta = b / b.sum()
        new_objective = float(a @ distances_to_point(G, beta))
        if abs(objective - new_objective) <= tol * new_objective:
            break
        objective = new_objective
    return beta, iterations


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


def medoid(D: np.ndarray) -> int:
    """The client with the smallest sum of distances to the others (lowest index on ties)."""
    return int(np.argmin(np.sqrt(D).sum(axis=1)))
