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
    """Centered clipping (Karimireddy et al. 2021, "Learning from history for Byzantine robust
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


# --- the Gram-route rules of fedsec.fltrust ... fedsec.clipped_clustering -------------------------

# MDA and SMEA enumerate their m-subsets while C(n, m) m^2 is at most this (docs/api.md).
EXACT_ENTRIES = 10**7


def _subset_mean(X, subset, weights):
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[list(subset)]
    return mean(X[list(subset)], w)


def _best_subset(n, m, score, drop=None):
    """The m-subset with the smallest score(subset): every subset in itertools.combinations
    order while C(n, m) m^2 <= EXACT_ENTRIES (the first smallest wins), else greedily
    (n - m times, remove the position drop(remaining) names, by default the point whose
    removal leaves the smallest score, lowest index on ties)."""
    import itertools
    import math

    if math.comb(n, m) * m * m <= EXACT_ENTRIES:
        best, best_score = None, np.inf
        for subset in itertools.combinations(range(n), m):
            s = score(list(subset))
            if best is None or s < best_score:
                best, best_score = list(subset), s
        return best
    remaining = list(range(n))
    while len(remaining) > m:
        if drop is not None:
            remaining.pop(drop(remaining))
            continue
        scores = [score(remaining[:k] + remaining[k + 1:]) for k in range(len(remaining))]
        remaining.pop(int(np.argmin(scores)))
    return remaining


def mda_selection(X, f, D=None):
    """The n - f indices (ascending) of minimum-diameter averaging: the subset with the smallest
    max_{i, j in S} ||x_i - x_j||. Greedy beyond the exact limit: drop the endpoint of the
    farthest remaining pair (the first such pair i < j in row order) with the larger sum of
    squared distances to the remaining points (i on ties)."""
    D = pairwise_sq_distances(X) if D is None else D

    def farthest_endpoint(remaining):
        best, pair = -1.0, None
        for a in range(len(remaining)):
            for b in range(len(remaining)):
                if D[remaining[a], remaining[b]] > best:
                    best, pair = D[remaining[a], remaining[b]], (a, b)
        a, b = pair
        sums = [sum(D[remaining[x], r] for r in remaining) for x in (a, b)]
        return a if sums[0] >= sums[1] else b

    return _best_subset(len(X), len(X) - f, lambda s: D[np.ix_(s, s)].max(), farthest_endpoint)


def mda(X, f, weights=None, D=None):
    """Minimum-diameter averaging (El Mhamdi, Guerraoui, Rouault 2018): the (weighted) mean of
    the n - f updates whose set has the smallest diameter."""
    return _subset_mean(X, mda_selection(X, f, D), weights)


def covariance_max_eigenvalue(Z):
    """lambda_max of (1/m) sum_i (z_i - mean)(z_i - mean)^T of the m rows of Z: that of
    (1/m) C C^T, C the centered rows (the same nonzero eigenvalues, an m x m problem)."""
    centered = Z - Z.mean(axis=0)
    return max(np.linalg.eigvalsh(centered @ centered.T)[-1], 0.0) / len(Z)


def smea_selection(X, f):
    """The n - f indices (ascending) of SMEA: the subset whose covariance has the smallest
    largest eigenvalue."""
    return _best_subset(len(X), len(X) - f, lambda s: covariance_max_eigenvalue(X[s]))


def smea(X, f, weights=None):
    """Smallest maximum eigenvalue averaging (Allouah et al. 2023; ByzFL's SMEA with exact
    eigenvalues): the (weighted) mean of the n - f updates of smallest covariance spectrum."""
    return _subset_mean(X, smea_selection(X, f), weights)


def monna_selection(X, f, trusted):
    """The n - f indices (ascending) nearest to X[trusted] (itself first, then by distance,
    ties to the lower index)."""
    dist = np.linalg.norm(X - X[trusted], axis=1)
    dist[trusted] = -1.0
    return sorted(np.argsort(dist, kind="stable")[:len(X) - f].tolist())


def monna(X, f, trusted, weights=None):
    """MoNNA (Farhadkhani et al. 2023): the (weighted) mean of the n - f nearest neighbours of
    the trusted update."""
    return _subset_mean(X, monna_selection(X, f, trusted), weights)


def caf(X, f, return_details=False):
    """The covariance-bound agnostic filter (Allouah, Guerraoui, Stephan 2025; ByzFL's CAF with
    exact eigenpairs): from c = 1, while sum(c) > n - 2f: mu = sum c_i x_i / sum c, Sigma =
    sum c_i (x_i - mu)(x_i - mu)^T / sum c with top eigenpair (lambda, v) (from the SVD of the
    rows sqrt(c_i / sum c) (x_i - mu)); keep mu when lambda is the smallest so far;
    tau_i = ((x_i - mu) . v)^2, c_i *= 1 - tau_i / max tau. Stops when Sigma is 0 or after 4n
    steps. Returns the kept mu (with return_details: (mu, its coefficients, steps))."""
    n = len(X)
    c = np.ones(n)
    best_a, best_lambda, steps = c / n, np.inf, 0
    while c.sum() > n - 2 * f and steps < 4 * n:
        steps += 1
        a = c / c.sum()
        mu = a @ X
        Z = X - mu
        _, s, vt = np.linalg.svd(np.sqrt(a)[:, None] * Z, full_matrices=False)
        lam = s[0] ** 2
        if lam < best_lambda:
            best_a, best_lambda = a, lam
        tau = (Z @ vt[0]) ** 2
        if lam == 0 or tau.max() == 0:
            break
        c = c * (1 - tau / tau.max())
    mu = best_a @ X
    return (mu, best_a, steps) if return_details else mu


def dnc_selection(X, f, subsample=10_000, iters=5, c=1.0, seed=0):
    """Divide-and-Conquer's kept clients (Shejwalkar & Houmansadr 2021, Algorithm 2): iters
    times, r = sorted(numpy Generator(seed).choice(d, b, replace=False)) (all coordinates when
    b >= d), scores ((x_i[r] - mu) . v)^2 with v the top right singular vector of the centered
    X[:, r], keep the floor(n - c f) lowest (ties to the lower index); the intersection."""
    n, d = X.shape
    rng = np.random.default_rng(seed)
    good = set(range(n))
    for _ in range(iters):
        r = np.arange(d) if subsample >= d else np.sort(rng.choice(d, subsample, replace=False))
        centered = X[:, r] - X[:, r].mean(axis=0)
        v = np.linalg.svd(centered, full_matrices=False)[2][0]
        scores = (centered @ v) ** 2
        good &= set(np.argsort(scores, kind="stable")[:int(np.floor(n - c * f))].tolist())
    return sorted(good)


def dnc(X, f, weights=None, **kwargs):
    """Divide-and-Conquer: the (weighted) mean of dnc_selection's clients."""
    return _subset_mean(X, dnc_selection(X, f, **kwargs), weights)


def _cosines(U):
    """cos(u_i, u_j), 0 where a vector is zero."""
    norms = np.linalg.norm(U, axis=1)
    denominator = np.outer(norms, norms)
    return np.clip(np.divide(U @ U.T, denominator, out=np.zeros((len(U), len(U))),
                             where=denominator > 0), -1.0, 1.0)


def _cosine_distances(U):
    """1 - cos(u_i, u_j), with an exact 0 diagonal (the clusterings' precomputed metric)."""
    distances = 1.0 - _cosines(U)
    np.fill_diagonal(distances, 0.0)
    return distances


def _frame(X, center):
    """The updates: X itself, or X - center."""
    return X if center is None else X - np.asarray(center, dtype=np.float64)


def _in_frame(value, center):
    return value if center is None else np.asarray(center, dtype=np.float64) + value


def fltrust(X, server_update, center=None, return_details=False):
    """FLTrust (Cao et al. 2021): TS_i = max(0, cos(g_i, g_0)); sum_i TS_i (||g_0|| / ||g_i||)
    g_i / sum_j TS_j, 0 when every TS_i is 0 (g_i = x_i, or x_i - center). With
    return_details: (value, trust scores)."""
    U = _frame(X, center)
    g0 = np.asarray(server_update, dtype=np.float64)
    norms, n0 = np.linalg.norm(U, axis=1), np.linalg.norm(g0)
    denominator = norms * n0
    cos = np.divide(U @ g0, denominator, out=np.zeros(len(U)), where=denominator > 0)
    trust = np.clip(cos, 0.0, 1.0)
    value = np.zeros(X.shape[1])
    if trust.sum() > 0:
        scaled = U[trust > 0] * (n0 / norms[trust > 0])[:, None]
        value = trust[trust > 0] @ scaled / trust.sum()
    value = _in_frame(value, center)
    return (value, trust) if return_details else value


def flame_admitted(X, center=None):
    """FLAME's admitted clients: sklearn's HDBSCAN (min_cluster_size n//2 + 1, min_samples 1,
    allow_single_cluster) on the cosine distances of the updates, the largest cluster; all
    when there is none or n < 2."""
    from sklearn.cluster import HDBSCAN

    U = _frame(X, center)
    n = len(U)
    if n < 2:
        return list(range(n))
    labels = HDBSCAN(min_cluster_size=n // 2 + 1, min_samples=1, metric="precomputed",
                     allow_single_cluster=True, copy=True).fit(_cosine_distances(U)).labels_
    if (labels < 0).all():
        return list(range(n))
    sizes = [(labels == k).sum() for k in range(labels.max() + 1)]
    return np.flatnonzero(labels == int(np.argmax(sizes))).tolist()


def _clipped_mean(U, kept, bound, weights):
    """The (weighted) mean over kept of u_i min(1, bound / ||u_i||)."""
    norms = np.linalg.norm(U, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    scale = np.where(norms > 0, np.minimum(1.0, bound / safe), 1.0)  # norm 0: nothing to clip
    return _subset_mean(U * scale[:, None], kept, weights)


def flame(X, noise_lambda=0.001, seed=0, weights=None, center=None, return_noise=False):
    """FLAME (Nguyen et al. 2022, Algorithm 1): the admitted updates clipped to the median norm
    S of all updates, averaged, plus sigma z with sigma = noise_lambda * S and z the float32
    standard normals of numpy's Generator(seed) (in float64). With return_noise: (value, the
    noise added)."""
    U = _frame(X, center)
    S = np.median(np.linalg.norm(U, axis=1))
    value = _clipped_mean(U, flame_admitted(X, center), S, weights)
    noise = noise_lambda * S * np.random.default_rng(seed).standard_normal(
        X.shape[1], dtype=np.float32).astype(np.float64)
    if noise_lambda == 0:
        noise = np.zeros(X.shape[1])
    value = _in_frame(value + noise, center)
    return (value, noise) if return_noise else value


def signguard_selection(X, lower=0.1, upper=3.0, fraction=0.1, seed=0, center=None):
    """SignGuard's kept clients (Xu et al. 2022, Algorithm 1): lower M < ||g_i|| < upper M
    (M the median norm), and in the largest MeanShift cluster (sklearn's estimate_bandwidth
    with quantile 0.5 over 50 samples, bin seeding, cluster_all False) of the fractions of
    positive, zero and negative g_i on floor(fraction d) coordinates (at least 1) drawn by
    numpy's Generator(seed) (sorted), each fraction divided by its largest over clients."""
    from sklearn.cluster import MeanShift, estimate_bandwidth

    U = _frame(X, center)
    n, d = U.shape
    norms = np.linalg.norm(U, axis=1)
    M = np.median(norms)
    by_norm = set(np.flatnonzero((norms > lower * M) & (norms < upper * M)).tolist())
    size = max(1, int(np.floor(fraction * d)))
    r = (np.arange(d) if size >= d
         else np.sort(np.random.default_rng(seed).choice(d, size, replace=False)))
    V = U[:, r]
    fractions = np.stack([(V > 0).mean(axis=1), (V == 0).mean(axis=1), (V < 0).mean(axis=1)],
                         axis=1)
    top = fractions.max(axis=0)
    features = np.divide(fractions, top, out=np.zeros_like(fractions), where=top > 0)
    cluster = set(range(n))
    if n >= 2:
        bandwidth = estimate_bandwidth(features, quantile=0.5, n_samples=50)
        if bandwidth > 0:
            import warnings

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Binning data failed")
                labels = MeanShift(bandwidth=bandwidth, bin_seeding=True,
                                   cluster_all=False).fit(features).labels_
            if (labels >= 0).any():
                sizes = [(labels == k).sum() for k in range(labels.max() + 1)]
                cluster = set(np.flatnonzero(labels == int(np.argmax(sizes))).tolist())
    return sorted(by_norm & cluster)


def signguard(X, lower=0.1, upper=3.0, fraction=0.1, seed=0, weights=None, center=None):
    """SignGuard: the (weighted) mean over the kept clients of g_i clipped to the median norm;
    the zero update when none is kept."""
    U = _frame(X, center)
    kept = signguard_selection(X, lower, upper, fraction, seed, center)
    if not kept:
        return _in_frame(np.zeros(X.shape[1]), center)
    return _in_frame(_clipped_mean(U, kept, np.median(np.linalg.norm(U, axis=1)), weights), center)


def clipped_clustering_selection(X, center=None):
    """Clipped clustering's kept clients (Li et al. 2023, Blades' Clippedclustering): sklearn's
    AgglomerativeClustering (2 clusters, average linkage) on the cosine distances of the
    updates (clipping does not change them), the larger cluster, client 0's on a tie."""
    from sklearn.cluster import AgglomerativeClustering

    U = _frame(X, center)
    n = len(U)
    if n < 2:
        return list(range(n))
    labels = AgglomerativeClustering(n_clusters=2, metric="precomputed",
                                     linkage="average").fit(_cosine_distances(U)).labels_
    sizes = [(labels == k).sum() for k in (0, 1)]
    label = labels[0] if sizes[0] == sizes[1] else int(np.argmax(sizes))
    return np.flatnonzero(labels == label).tolist()


def clipped_clustering(X, tau=None, weights=None, center=None):
    """Clipped clustering: each update clipped to tau (default: the median norm), the
    (weighted) mean of the larger cluster."""
    U = _frame(X, center)
    bound = np.median(np.linalg.norm(U, axis=1)) if tau is None else tau
    kept = clipped_clustering_selection(X, center)
    return _in_frame(_clipped_mean(U, kept, bound, weights), center)


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
