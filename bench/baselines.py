"""Straightforward vectorised baselines that fedsec is measured against.

What an FL engineer writes without fedsec: torch (and NumPy where it is natural) on the stacked
[n, d] array, a few library calls per step. They follow fedsec's conventions (docs/api.md) closely
enough to check fedsec's results before any timing (float32 throughout, but norms by cascade
summation and Bulyan's ties decided as fedsec decides them), and they allocate [n, d] temporaries
(sorts, X - z) and, for lists of updates, a stacked copy: what fedsec's streaming core avoids.
"""
from __future__ import annotations

import numpy as np
import torch

# --- torch ----------------------------------------------------------------------------------------


def mean(X: torch.Tensor) -> torch.Tensor:
    return X.mean(0)


def _middle(S: torch.Tensor) -> torch.Tensor:
    """The median of each column of the column-sorted S: for an even count the mean of the two
    middle values (torch.median would give the lower one)."""
    n = S.shape[0]
    return S[(n - 1) // 2:n // 2 + 1].mean(0)


def median(X: torch.Tensor) -> torch.Tensor:
    return _middle(X.sort(0).values)


def trimmed_mean(X: torch.Tensor, beta: float) -> torch.Tensor:
    n = X.shape[0]
    k = int(beta * n)
    return X.sort(0).values[k:n - k].mean(0)


def _row_norms(D: torch.Tensor) -> torch.Tensor:
    """Euclidean norms of the rows of the temporary D, which is overwritten. Summed by torch.sum
    (cascade summation): torch.norm's float32 accumulation is off by up to 1e-4 relative at
    d = 1e7, more than the checks allow."""
    return D.square_().sum(1).sqrt()


def _squared_distances(X: torch.Tensor) -> torch.Tensor:
    D = torch.cdist(X, X).square()
    D.fill_diagonal_(float("inf"))  # a client is not its own neighbour
    return D


def _krum_scores(D: torch.Tensor, neighbours: int) -> torch.Tensor:
    return D.topk(neighbours, dim=1, largest=False).values.sum(1)


def krum(X: torch.Tensor, f: int, m: int = 1) -> torch.Tensor:
    """Mean of the m updates whose n - f - 2 nearest others are closest (Blanchard et al.)."""
    scores = _krum_scores(_squared_distances(X), X.shape[0] - f - 2)
    return X[scores.topk(m, largest=False).indices].mean(0)


def geometric_median(X: torch.Tensor, nu: float = 1e-6, max_iter: int = 100,
                     tol: float = 1e-6) -> torch.Tensor:
    """Smoothed Weiszfeld iterations from the mean, each one reading X twice (distances to the
    iterate, then the weighted combination)."""
    z = X.mean(0)
    distances = _row_norms(X - z)
    objective = distances.mean()
    for _ in range(max_iter):
        b = 1.0 / distances.clamp_min(nu)
        z = (b / b.sum()) @ X
        distances = _row_norms(X - z)
        new_objective = distances.mean()
        if (objective - new_objective).abs() <= tol * new_objective:
            break
        objective = new_objective
    return z


def _bulyan_selection(D: torch.Tensor, f: int, theta: int) -> list[int]:
    """theta clients chosen by Krum one at a time on the remaining set."""
    remaining, chosen = list(range(D.shape[0])), []
    while len(chosen) < theta:
        k = min(max(len(remaining) - f - 2, 1), len(remaining) - 1)
        sub = D[remaining][:, remaining]
        best = 0 if k == 0 else int(_krum_scores(sub, k).argmin())
        chosen.append(remaining.pop(best))
    return sorted(chosen)


def _closest_to_median_mean(S: torch.Tensor, keep: int) -> torch.Tensor:
    """Per column of the column-sorted S, the mean of the `keep` values closest to the median.
    They are a window of the sorted column: drop, len(S) - keep times, the end farther from the
    median, the upper one on a tie. The distances are compared as sums (lower + upper < 2 median),
    as fedsec does, so that rounding decides no exact tie."""
    theta, d = S.shape
    twice_median = 2 * _middle(S)
    lo = torch.zeros(1, d, dtype=torch.long)
    hi = torch.full((1, d), theta - 1)
    for _ in range(theta - keep):
        drop_lower = (S.gather(0, lo) + S.gather(0, hi) < twice_median).long()
        lo += drop_lower
        hi -= 1 - drop_lower
    rows = torch.arange(theta)[:, None]
    return S.where((rows >= lo) & (rows <= hi), 0.0).sum(0) / keep


def bulyan(X: torch.Tensor, f: int) -> torch.Tensor:
    """Krum-selected theta = n - 2f updates, then per coordinate the mean of the theta - 2f
    values closest to their median (El Mhamdi et al. 2018)."""
    theta = X.shape[0] - 2 * f
    S = X[_bulyan_selection(_squared_distances(X), f, theta)]
    return _closest_to_median_mean(S.sort(0).values, theta - 2 * f)


def centered_clip(X: torch.Tensor, tau: float, center: torch.Tensor,
                  iters: int = 1) -> torch.Tensor:
    """v <- v + mean_i (x_i - v) min(1, tau / ||x_i - v||) from center (Karimireddy et al.)."""
    v = center
    for _ in range(iters):
        clip = (tau / _row_norms(X - v)).clamp_max(1.0)
        v = v + ((X - v) * clip[:, None]).mean(0)
    return v


# --- NumPy ----------------------------------------------------------------------------------------


def np_mean(X: np.ndarray) -> np.ndarray:
    return X.mean(axis=0)


def np_median(X: np.ndarray) -> np.ndarray:
    return np.median(X, axis=0)


def np_trimmed_mean(X: np.ndarray, beta: float) -> np.ndarray:
    n = X.shape[0]
    k = int(beta * n)
    return np.sort(X, axis=0)[k:n - k].mean(axis=0)
