"""Helpers shared by the built-in defenses.

- ``doc(default, text)``: a ``Params`` field with its documentation in ``metadata["doc"]``.
- ``states`` / ``counts``: the state_dicts and sample counts of a round's W_l.
- ``clip_towards`` / ``add_gaussian_noise``: norm clipping towards w_g, Gaussian noise from
  ``ctx.rng`` (the state_dict helpers themselves are ``fedsec.security.state``; the metric
  keys and report helpers ``fedsec.security.metrics``).
- ``check_*``: ``validate`` helpers whose messages name the key, the value and what is allowed.
- ``score_bounds``: mu -/+ t sigma of outlier scores (mean and std, or median and MAD).
- ``update_matrix`` / ``add_update`` / ``key_slices``: the round's updates w_i - w_g as one
  [n, d] float64 matrix and back into a state_dict; ``finite_rows`` drops (and reports) the
  non-finite ones; ``output_layer`` names the output layer's weight and bias; ``cosine_matrix``
  (of rows).
- ``kmeans_1d`` (exact), ``kmeans`` (scikit-learn), ``gap_statistic``: the clustering of the
  detection defenses; ``keep_global``: what a filter returns when it rejects every client.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ...aggregation.solvers import cosine_similarities
from ..base import ClientModel, Federation, RoundContext, StateDict
from ..base import client_id, doc, is_float  # noqa: F401  (re-exported)
from ..metrics import report_excluded
from ..state import diff_norm, is_weight_param, map_weights


def states(models: list[ClientModel]) -> list[StateDict]:
    return [state for _, state in models]


def counts(models: list[ClientModel]) -> list[float]:
    return [float(count) for count, _ in models]


def clip_towards(local: StateDict, global_model: StateDict, bound: float) -> tuple[StateDict, float]:
    """w_g + (w_l - w_g) / max(1, ||w_l - w_g|| / bound); returns the model and the norm."""
    norm = diff_norm(local, global_model)
    scale = 1.0 / max(1.0, norm / bound) if math.isfinite(norm) else 1.0
    if scale == 1.0:
        return local, norm

    def clip(k: str, v: torch.Tensor) -> torch.Tensor:
        g = global_model[k].to(v)
        return g + (v - g) * scale

    return map_weights(local, clip), norm


# --- validation -----------------------------------------------------------------------------------

def check_int_range(key: str, value: int, low: int, high: int, what_high: str = "") -> None:
    if value < low or value > high:
        extra = f" ({what_high})" if what_high else ""
        raise ValueError(f"{key}={value} is out of range: must be between {low} and {high}{extra}")


def check_byzantine(key: str, f: int, federation: Federation, need: str,
                    ok: Callable[[int, int], bool]) -> None:
    """``f >= 0`` and ``ok(n, f)`` for n = client_num_per_round; ``need`` states the rule."""
    n = federation.client_num_per_round
    if f < 0:
        raise ValueError(f"{key}={f} must be >= 0")
    if not ok(n, f):
        raise ValueError(f"{key}={f} is too large for client_num_per_round={n}: {need}")


def add_gaussian_noise(state: StateDict, sigma: float, ctx: RoundContext) -> StateDict:
    """A new dict: N(0, sigma^2) noise from ``ctx.rng`` added to every weight parameter."""
    if sigma == 0:
        return dict(state)

    def noisy(k: str, v: torch.Tensor) -> torch.Tensor:
        noise = torch.as_tensor(ctx.rng.standard_normal(tuple(v.shape)) * sigma)
        return v + noise.to(dtype=v.dtype, device=v.device)

    return map_weights(state, noisy)


# --- outlier bounds -------------------------------------------------------------------------------

MAD_TO_SIGMA = 1.4826  # sigma of a normal distribution = 1.4826 * its median absolute deviation


def score_bounds(scores: np.ndarray, threshold_sigma: float, robust: bool
                 ) -> tuple[float, float]:
    """(mu - t sigma, mu + t sigma) of ``scores``: mean and sample std (FedML's
    compute_gaussian_distribution), or with ``robust`` the median and 1.4826 * MAD."""
    if robust:
        mu = float(np.median(scores))
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(scores - mu)))
    else:
        mu = float(scores.mean())
        sigma = float(scores.std(ddof=1)) if len(scores) > 1 else 0.0
    return mu - threshold_sigma * sigma, mu + threshold_sigma * sigma


# --- flattened updates (the detection defenses) ---------------------------------------------------

def weight_keys(state: StateDict) -> list[str]:
    return [k for k, v in state.items() if is_weight_param(k, v)]


def update_matrix(models: list[ClientModel], global_model: StateDict,
                  keys: list[str] | None = None,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[n, d] on the CPU: row i is w_i - w_g over ``keys`` (default the weight parameters),
    each entry flattened, in ``keys`` order; both models are cast to ``dtype`` (default
    float64) before the subtraction."""
    keys = weight_keys(global_model) if keys is None else keys
    sizes = [global_model[k].numel() for k in keys]
    out = torch.empty((len(models), sum(sizes)), dtype=dtype)
    for row, (_, local) in enumerate(models):
        start = 0
        for key, size in zip(keys, sizes):
            base = global_model[key].detach().to(device="cpu", dtype=dtype)
            out[row, start:start + size] = (local[key].detach().to(device="cpu", dtype=dtype)
                                            - base).reshape(-1)
            start += size
    return out


def key_slices(state: StateDict, keys: list[str]) -> dict[str, slice]:
    """Where each of ``keys`` lies in a row of ``update_matrix(..., keys)``."""
    out, start = {}, 0
    for key in keys:
        out[key] = slice(start, start + state[key].numel())
        start += state[key].numel()
    return out


def add_update(global_model: StateDict, update: torch.Tensor, keys: list[str],
               template: StateDict) -> StateDict:
    """A new state_dict: w_g + ``update`` (a flattened row over ``keys``) on ``keys``, in w_g's
    dtype and device; every other entry from ``template``."""
    slices = key_slices(global_model, keys)
    out = dict(template)
    for key, where in slices.items():
        g = global_model[key]
        out[key] = (g.detach().to(torch.float64).cpu() + update[where].reshape(g.shape)).to(
            dtype=g.dtype, device=g.device)
    return out


def finite_rows(updates: torch.Tensor, ctx: RoundContext) -> list[int]:
    """Positions whose update row is finite; the others are reported excluded (a NaN or Inf
    never reaches the model)."""
    finite = torch.isfinite(updates).all(dim=1).tolist()
    report_excluded(ctx, [i for i, ok in enumerate(finite) if not ok],
                    "non-finite values (NaN or Inf)")
    return [i for i, ok in enumerate(finite) if ok]


def output_layer(state: StateDict) -> tuple[str, str | None]:
    """The keys of the output layer: its weight (the last weight parameter with two or more
    dimensions) and its bias (the 1-D weight parameter right after it with one entry per output
    row), or None when it has none."""
    keys = weight_keys(state)
    matrices = [i for i, k in enumerate(keys) if state[k].dim() >= 2]
    if not matrices:
        raise ValueError("the model has no weight matrix (a layer with 2 or more dimensions) to "
                         "take as its output layer")
    w = matrices[-1]
    rows = state[keys[w]].shape[0]
    after = keys[w + 1] if w + 1 < len(keys) else None
    bias = after if after is not None and tuple(state[after].shape) == (rows,) else None
    return keys[w], bias


def cosine_matrix(vectors: torch.Tensor) -> np.ndarray:
    """n x n cosine similarities of the rows (float64, from their Gram matrix; the core's
    ``solvers.cosine_similarities``); a zero row has cosine 0 with every row."""
    return cosine_similarities((vectors @ vectors.T).numpy())


# --- clustering -----------------------------------------------------------------------------------

def kmeans_1d(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-means of each column of ``values`` ([n] or [n, c]): the optimal partition of a
    column into k groups, found by dynamic programming over its sorted values (Wang & Song
    2011, "Ckmeans.1d.dp"; in one dimension an optimal cluster is a run of consecutive sorted
    values). Deterministic, unlike Lloyd's iterations, and vectorised over the columns.

    Returns (labels [n] or [n, c], within-cluster sum of squares [] or [c]); labels number the
    clusters 0..k-1 in increasing order of their values. Needs 1 <= k <= n."""
    x = np.asarray(values, dtype=np.float64)
    column = x.ndim == 1
    x = x[:, None] if column else x
    n, c = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n; got k={k}, n={n}")
    order = np.argsort(x, axis=0, kind="stable")
    xs = np.take_along_axis(x, order, axis=0)
    s1 = np.vstack([np.zeros((1, c)), np.cumsum(xs, axis=0)])
    s2 = np.vstack([np.zeros((1, c)), np.cumsum(xs * xs, axis=0)])

    def cost(i: np.ndarray, j: int) -> np.ndarray:
        """Sum of squares of the runs [i, j) (i a vector of starts): [len(i), c]."""
        size = (j - i)[:, None]
        total = s1[j][None, :] - s1[i]
        return np.clip(s2[j][None, :] - s2[i] - total * total / size, 0.0, None)

    best = np.full((k, n + 1, c), np.inf)
    start = np.zeros((k, n + 1, c), dtype=np.int64)
    for j in range(1, n + 1):
        best[0, j] = cost(np.array([0]), j)[0]
    for m in range(1, k):
        for j in range(m + 1, n + 1):
            i = np.arange(m, j)
            candidates = best[m - 1, i] + cost(i, j)
            pick = np.argmin(candidates, axis=0)
            best[m, j] = candidates[pick, np.arange(c)]
            start[m, j] = i[pick]
    sorted_labels = np.zeros((n, c), dtype=np.int64)
    end = np.full(c, n)
    position = np.arange(n)[:, None]
    for m in range(k - 1, 0, -1):
        begin = start[m, end, np.arange(c)]
        sorted_labels[(position >= begin) & (position < end)] = m
        end = begin
    labels = np.empty_like(sorted_labels)
    np.put_along_axis(labels, order, sorted_labels, axis=0)
    within = best[k - 1, n]
    return (labels[:, 0], within[0]) if column else (labels, within)


def gap_statistic(data: np.ndarray, k_max: int, references: int, rng: np.random.Generator,
                  within: Callable[[np.ndarray, int], np.ndarray]) -> tuple[int, np.ndarray,
                                                                            np.ndarray]:
    """The number of clusters of ``data`` ([m, p]) by the gap statistic (Tibshirani, Walther,
    Hastie 2001): with W_k the within-cluster sum of squares of k-means with k clusters and
    W*_kb that of reference set b (``references`` sets of m points uniform in the bounding box
    of the data),

        Gap(k) = mean_b log W*_kb - log W_k,    s_k = std_b(log W*_kb) sqrt(1 + 1/B),

    k is the smallest with Gap(k) >= Gap(k+1) - s_(k+1), else k_max (at most the number of
    distinct points). ``within(sets, k)`` gives W_k of each of ``sets`` ([b, m, p]).
    Returns (k, Gap(1..k_max), s(1..k_max))."""
    data = np.asarray(data, dtype=np.float64)
    k_max = min(k_max, len(np.unique(data, axis=0)))
    if k_max <= 1:
        return 1, np.zeros(1), np.zeros(1)
    low, high = data.min(axis=0), data.max(axis=0)
    refs = low + (high - low) * rng.random((references, *data.shape))
    gaps, spread = np.empty(k_max), np.empty(k_max)
    with np.errstate(divide="ignore"):
        for k in range(1, k_max + 1):
            log_w = np.log(within(data[None], k)[0])
            log_ref = np.log(within(refs, k))
            gaps[k - 1] = log_ref.mean() - log_w
            spread[k - 1] = log_ref.std() * math.sqrt(1 + 1 / references)
    for k in range(1, k_max):
        if gaps[k - 1] >= gaps[k] - spread[k]:
            return k, gaps, spread
    return k_max, gaps, spread


def within_1d(sets: np.ndarray, k: int) -> np.ndarray:
    """W_k of 1-D point sets ([b, m, 1]) by exact k-means: ``within`` for ``gap_statistic``."""
    return kmeans_1d(sets[:, :, 0].T, k)[1]


def kmeans(points: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float]:
    """scikit-learn's k-means (k-means++ start, seeded): (labels, within-cluster sum of
    squares)."""
    from sklearn.cluster import KMeans

    fit = KMeans(n_clusters=k, n_init="auto", random_state=seed).fit(points)
    return fit.labels_, float(fit.inertia_)


def keep_global(global_model: StateDict, ctx: RoundContext) -> list[ClientModel]:
    """What a before-aggregation filter returns when it rejects every client: the global model
    as the only model, so any aggregation of it keeps the global model (``ctx.client_ids``
    becomes empty: no client's update is in it)."""
    ctx.client_ids = []
    return [(1.0, {k: v.clone() for k, v in global_model.items()})]
