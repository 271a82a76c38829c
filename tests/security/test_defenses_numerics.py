"""The numeric cores of the detection defenses against float64 NumPy references written from
each paper's definition, on seeded inputs over several shapes, plus small hand cases:

- exact 1-D k-means and the gap statistic (Tibshirani et al. 2001), FLDetector's L-BFGS
  Hessian-vector product (against the explicit BFGS recursion and the secant equation);
- the residual-based reweighting of Fu et al. 2019 (repeated median, leverage, Huber weights,
  thresholding, client weights) and its aggregate;
- LASA's clipping, sparsification and median-based z-score filters, and its aggregate;
- Auror's indicative features and suspicion, RFLBAT's 2-D PCA and distance-sum filter;
- DeepSight's NEUPs, threshold exceedings and cluster acceptance;
- FedML's three-sigma bounds and FoolsGold score;
- Soteria's pruning mask against one backward pass per representation feature.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fedsec.security import Federation, RoundContext, build_defense
from fedsec.security.defenses._common import gap_statistic, kmeans_1d, within_1d
from fedsec.security.defenses.auror import auror_suspicion
from fedsec.security.defenses.deepsight import (accepted_models, normalized_update_energies,
                                                threshold_exceedings)
from fedsec.security.defenses.fldetector import lbfgs_hvp
from fedsec.security.defenses.lasa import mz_scores, sign_purity
from fedsec.security.defenses.residual_based_reweighting import residual_confidence
from fedsec.security.defenses.rflbat import distance_sum_inliers, pca_2d
from fedsec.security.defenses.soteria import pruning_mask
from fedsec.security.defenses.three_sigma import fedml_foolsgold_scores, score_bounds

SHAPES = [(3, 1), (5, 7), (10, 50)]  # (clients, coordinates)


def brute_force_within(x: np.ndarray, k: int) -> float:
    """The smallest within-cluster sum of squares over every labelling of ``x`` into k
    non-empty clusters."""
    best = math.inf
    for labels in itertools.product(range(k), repeat=len(x)):
        labels = np.array(labels)
        if len(set(labels)) < k:
            continue
        best = min(best, sum(((x[labels == j] - x[labels == j].mean()) ** 2).sum()
                             for j in range(k)))
    return best


# --- k-means and the gap statistic ----------------------------------------------------------------

@pytest.mark.parametrize("n,k", [(1, 1), (2, 2), (4, 2), (6, 3), (5, 4)])
def test_kmeans_1d_is_the_exact_optimum(n, k):
    rng = np.random.default_rng(n * 10 + k)
    x = rng.normal(size=(n, 3))
    labels, within = kmeans_1d(x, k)
    for c in range(3):
        best = brute_force_within(x[:, c], k)
        own = sum(((x[labels[:, c] == j, c] - x[labels[:, c] == j, c].mean()) ** 2).sum()
                  for j in range(k))
        assert within[c] == pytest.approx(best, abs=1e-12), (n, k, c)
        assert own == pytest.approx(best, abs=1e-12)
        centers = [x[labels[:, c] == j, c].mean() for j in range(k)]
        assert centers == sorted(centers)  # labels in increasing order of the values


def test_kmeans_1d_hand_case():
    labels, within = kmeans_1d(np.array([0.0, 10.0, 1.0, 11.0, 12.0]), 2)
    assert labels.tolist() == [0, 1, 0, 1, 1]
    assert within == pytest.approx(0.5 + 2.0)


def gap_reference(data: np.ndarray, k_max: int, refs: int, seed: int):
    """Tibshirani, Walther, Hastie 2001 with brute-force k-means, uniform reference sets in the
    data's bounding box, drawn from the same generator as the implementation."""
    rng = np.random.default_rng(seed)
    k_max = min(k_max, len(np.unique(data)))
    low, high = data.min(), data.max()
    ref_sets = low + (high - low) * rng.random((refs, len(data), 1))
    gaps, s = [], []
    for k in range(1, k_max + 1):
        log_w = math.log(brute_force_within(data, k))
        log_ref = np.array([math.log(brute_force_within(r[:, 0], k)) for r in ref_sets])
        gaps.append(log_ref.mean() - log_w)
        s.append(log_ref.std() * math.sqrt(1 + 1 / refs))
    for k in range(1, k_max):
        if gaps[k - 1] >= gaps[k] - s[k]:
            return k, gaps
    return k_max, gaps


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gap_statistic_matches_reference(seed):
    rng = np.random.default_rng(seed)
    data = np.concatenate([rng.normal(0, 1, 3), rng.normal(seed * 3.0, 0.5, 3)])
    k, gaps, _ = gap_statistic(data[:, None], 3, 4, np.random.default_rng(seed), within_1d)
    k_ref, gaps_ref = gap_reference(data, 3, 4, seed)
    assert k == k_ref
    np.testing.assert_allclose(gaps, gaps_ref, rtol=1e-9, atol=1e-9)


def test_gap_statistic_hand_cases():
    rng = np.random.default_rng(0)
    two_groups = np.array([0.0, 0.01, 0.02, 0.03, 1.0, 1.01])[:, None]
    assert gap_statistic(two_groups, 5, 10, rng, within_1d)[0] == 2
    spread = np.linspace(0, 1, 10)[:, None]
    assert gap_statistic(spread, 5, 10, rng, within_1d)[0] == 1
    assert gap_statistic(np.full((6, 1), 3.0), 5, 10, rng, within_1d)[0] == 1


# --- FLDetector's L-BFGS --------------------------------------------------------------------------

def bfgs_reference(s: np.ndarray, y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """B_N v by the explicit BFGS recursion from B_0 = sigma I, sigma = y_N.s_N / s_N.s_N."""
    sigma = y[-1] @ s[-1] / (s[-1] @ s[-1])
    b = sigma * np.eye(len(v))
    for sk, yk in zip(s, y):
        bs = b @ sk
        b = b - np.outer(bs, bs) / (sk @ bs) + np.outer(yk, yk) / (yk @ sk)
    return b @ v


@pytest.mark.parametrize("d,pairs", [(2, 1), (7, 2), (12, 3), (30, 5)])
def test_lbfgs_hvp_equals_the_bfgs_matrix(d, pairs):
    rng = np.random.default_rng(d + pairs)
    a = rng.normal(size=(d, d))
    hessian = a @ a.T + d * np.eye(d)  # SPD: y.s > 0, the BFGS update is defined
    s = rng.normal(size=(pairs, d))
    y = s @ hessian.T
    v = rng.normal(size=d)
    got = lbfgs_hvp(torch.from_numpy(s), torch.from_numpy(y), torch.from_numpy(v)).numpy()
    np.testing.assert_allclose(got, bfgs_reference(s, y, v), rtol=1e-9, atol=1e-9)
    # the secant equation of the newest pair: B_N s_N = y_N
    np.testing.assert_allclose(lbfgs_hvp(torch.from_numpy(s), torch.from_numpy(y),
                                         torch.from_numpy(s[-1])).numpy(), y[-1], rtol=1e-9)


def test_lbfgs_hvp_hand_case_and_still_model():
    # one pair s = (1, 0), y = (3, 1): sigma = 3, B_1 = 3I - 3 e1 e1^T + y y^T / 3
    # = [[3, 1], [1, 10/3]]
    got = lbfgs_hvp(torch.tensor([[1.0, 0.0]], dtype=torch.float64),
                    torch.tensor([[3.0, 1.0]], dtype=torch.float64),
                    torch.tensor([0.0, 1.0], dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), [1.0, 10 / 3])
    still = lbfgs_hvp(torch.zeros((1, 3), dtype=torch.float64),
                      torch.ones((1, 3), dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    assert torch.equal(still, torch.zeros(3, dtype=torch.float64))


# --- residual-based reweighting -------------------------------------------------------------------

def residual_reference(values: np.ndarray, lam: float):
    """Fu et al. 2019 for one coordinate's values across the clients: weights and line values,
    with explicit loops and the hat matrix of the design [1, rank]."""
    n = len(values)
    order = np.argsort(values, kind="stable")
    ys = values[order]
    rank = np.empty(n)
    rank[order] = np.arange(n)
    inner = [np.median([(ys[j] - ys[i]) / (j - i) for j in range(n) if j != i])
             for i in range(n)]
    slope = np.median(inner)
    intercept = np.median(values) - slope * (n - 1) / 2
    line = intercept + slope * rank
    r = values - line
    scale = 1.4826 * (1 + 5 / (n - 1)) * np.median(np.sort(np.abs(r))[1:]) + 1e-7
    e = r / scale
    x = np.stack([np.ones(n), rank], axis=1)
    h = np.diag(x @ np.linalg.inv(x.T @ x) @ x.T)
    k = lam * math.sqrt(2 / n)
    w = np.empty(n)
    for i in range(n):
        u = e[i] / math.sqrt(1 - h[i])
        w[i] = 1.0 if u == 0 else max(-k, min(k, u)) / u
    return w, line


@pytest.mark.parametrize("n,d", SHAPES + [(7, 3)])
@pytest.mark.parametrize("lam", [2.0, 0.5])
def test_residual_confidence_matches_reference(n, d, lam):
    rng = np.random.default_rng(n * d)
    y = rng.normal(size=(d, n))
    y[:, 0] += 5.0  # an outlying client
    weights, line = residual_confidence(torch.from_numpy(y), lam)
    for c in range(d):
        w_ref, line_ref = residual_reference(y[c], lam)
        np.testing.assert_allclose(weights[c].numpy(), w_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(line[c].numpy(), line_ref, rtol=1e-9, atol=1e-9)


def round_of(updates: np.ndarray, keys_shapes: list[tuple[str, tuple[int, ...]]], seed=0):
    """Models w_g + updates[i] split into the named tensors (float64), the global model, ctx."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=updates.shape[1])
    cuts = np.cumsum([int(np.prod(s)) for _, s in keys_shapes])[:-1]

    def state(flat):
        return {k: torch.from_numpy(part.reshape(s).copy())
                for (k, s), part in zip(keys_shapes, np.split(flat, cuts))}

    n = len(updates)
    ctx = RoundContext(0, list(range(100, 100 + n)), np.random.default_rng(seed))
    return [(10.0, state(g + u)) for u in updates], state(g), ctx, g


def flat(state: dict) -> np.ndarray:
    return np.concatenate([v.double().reshape(-1).numpy() for v in state.values()])


@pytest.mark.parametrize("n,d", SHAPES)
def test_residual_reweighting_aggregate_matches_reference(n, d):
    rng = np.random.default_rng(d)
    u = rng.normal(size=(n, d)) * 0.1
    u[-1] += 3.0
    models, g_state, ctx, g = round_of(u, [("w", (d,))])
    defense = build_defense({"enable_defense": True, "defense_type": "residual_based_reweighting"},
                            Federation(20, n))
    out = flat(defense.defend_on_aggregation(models, g_state, ctx))
    weights = np.empty((d, n))
    restricted = np.empty((n, d))
    for c in range(d):
        w, line = residual_reference(u[:, c], 2.0)
        weights[c] = w
        restricted[:, c] = np.where(w >= 0.1, u[:, c], line)
    conf = (weights * weights.std(axis=1, ddof=1, keepdims=True)).sum(axis=0)
    # every confidence alike (std 0 everywhere): equal weights (the authors' code divides 0/0)
    conf = (conf / conf.max()) ** 2 if conf.max() > 0 else np.ones(n)
    conf = conf / conf.sum()
    np.testing.assert_allclose(out, g + conf @ restricted, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose([ctx.metrics["client_weights"][100 + i] for i in range(n)], conf,
                               rtol=1e-9)


def test_residual_reweighting_hand_case():
    # one coordinate, updates 0, 1, 2, 3, 100: slope 1, intercept 0, only the last residual is
    # non-zero (96), the robust scale is 1e-7, so its confidence is ~1e-9 < thresh: its value is
    # replaced by the line's (4) and its client weight is ~0; the others average to 1.5
    models, g_state, ctx, g = round_of(np.array([[0.0], [1.0], [2.0], [3.0], [100.0]]),
                                       [("w", (1,))])
    defense = build_defense({"enable_defense": True, "defense_type": "residual_based_reweighting"},
                            Federation(20, 5))
    out = defense.defend_on_aggregation(models, g_state, ctx)
    assert float(out["w"][0]) - g[0] == pytest.approx(1.5, abs=1e-12)
    weights = ctx.metrics["client_weights"]
    assert weights[104] < 1e-15 and all(weights[100 + i] == pytest.approx(0.25) for i in range(4))
    assert ctx.metrics["residual_replaced_fraction"] == pytest.approx(1 / 5)


# --- LASA -----------------------------------------------------------------------------------------

LASA_LAYERS = [("conv.weight", (3, 2, 2, 2)), ("conv.bias", (3,)), ("fc.weight", (4, 6)),
               ("fc.bias", (4,))]


def lasa_reference(u: np.ndarray, sparsity: float, lam_n: float, lam_s: float) -> np.ndarray:
    """Xu et al. 2025 (the authors' code) on flattened updates with LASA_LAYERS."""
    norms = np.linalg.norm(u, axis=1)
    med = np.median(norms)
    clipped = u * np.minimum(1.0, med / norms)[:, None]
    sizes = [int(np.prod(s)) for _, s in LASA_LAYERS]
    bounds = np.cumsum([0] + sizes)
    spans = [(bounds[i], bounds[i + 1]) for i in range(len(sizes))]
    matrix = np.concatenate([np.arange(a, b) for (a, b), (_, s) in zip(spans, LASA_LAYERS)
                             if len(s) >= 2])
    sparse = clipped.copy()
    for i in range(len(u)):
        mags = np.abs(clipped[i, matrix])
        kth = np.sort(mags)[::-1][int(len(matrix) * (1 - sparsity)) - 1]
        sparse[i, matrix] = np.where(mags > kth, clipped[i, matrix], 0.0)
    out = np.empty(u.shape[1])
    for a, b in spans:
        layer = sparse[:, a:b]
        ln = np.linalg.norm(layer, axis=1)
        purity = np.array([0.5 * (1 + np.sign(r).sum() / np.abs(np.sign(r)).sum()) for r in layer])
        # values all alike (std 0): the filter tells nothing and passes everyone
        mz_n = np.abs(ln - np.median(ln)) / ln.std() if ln.std() > 0 else np.zeros(len(u))
        mz_s = (np.abs(purity - np.median(purity)) / purity.std() if purity.std() > 0
                else np.zeros(len(u)))
        kept = [i for i in range(len(u)) if mz_n[i] < lam_n and mz_s[i] < lam_s]
        kept = kept or list(range(len(u)))
        out[a:b] = layer[kept].mean(axis=0)
    return out


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("sparsity,lam", [(0.3, 1.0), (0.5, 2.0)])
def test_lasa_matches_reference(n, sparsity, lam):
    rng = np.random.default_rng(n)
    d = sum(int(np.prod(s)) for _, s in LASA_LAYERS)
    u = rng.normal(size=(n, d))
    u[0] *= 20.0
    models, g_state, ctx, g = round_of(u, LASA_LAYERS)
    defense = build_defense({"enable_defense": True, "defense_type": "lasa",
                             "lasa_sparsity": sparsity, "lasa_lambda_n": lam,
                             "lasa_lambda_s": lam}, Federation(20, n))
    out = flat(defense.defend_on_aggregation(models, g_state, ctx))
    np.testing.assert_allclose(out, g + lasa_reference(u, sparsity, lam, lam), rtol=1e-9,
                               atol=1e-9)


def test_lasa_filters_hand_case():
    np.testing.assert_allclose(mz_scores(np.array([1.0, 2.0, 3.0, 10.0])),
                               np.abs(np.array([1.0, 2.0, 3.0, 10.0]) - 2.5) / 3.5355339059327378)
    assert mz_scores(np.ones(4)).tolist() == [0, 0, 0, 0]
    rows = torch.tensor([[1.0, -2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0]])
    np.testing.assert_allclose(sign_purity(rows), [2 / 3, 0.5, 0.0])


# --- Auror, RFLBAT --------------------------------------------------------------------------------

@pytest.mark.parametrize("n,d", [(4, 3), (6, 5), (8, 4)])
def test_auror_suspicion_matches_brute_force(n, d):
    rng = np.random.default_rng(n + d)
    u = rng.normal(size=(n, d))
    u[:2] += 2.0
    alpha = 1.0
    got, count = auror_suspicion(u, alpha)
    minority_hits = np.zeros(n)
    indicative = 0
    for c in range(d):
        best, best_labels = math.inf, None
        for labels in itertools.product((0, 1), repeat=n):
            labels = np.array(labels)
            if labels.min() == labels.max():
                continue
            w = sum(((u[labels == j, c] - u[labels == j, c].mean()) ** 2).sum() for j in (0, 1))
            if w < best - 1e-12:
                best, best_labels = w, labels
        centers = [u[best_labels == j, c].mean() for j in (0, 1)]
        if abs(centers[0] - centers[1]) > alpha:
            indicative += 1
            sizes = [(best_labels == j).sum() for j in (0, 1)]
            if sizes[0] != sizes[1]:
                minority_hits += best_labels == int(np.argmin(sizes))
    assert count == indicative
    np.testing.assert_allclose(got, minority_hits / max(indicative, 1))


def test_auror_hand_case():
    u = np.array([[0.0, 0.001], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.002]])
    suspicion, count = auror_suspicion(u, 0.5)
    assert count == 1 and suspicion.tolist() == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("n,d", [(3, 5), (6, 10), (10, 40)])
def test_rflbat_pca_matches_svd(n, d):
    rng = np.random.default_rng(n * d)
    u = rng.normal(size=(n, d)) * np.linspace(3, 0.1, d)
    got = pca_2d(torch.from_numpy(u))
    centered = u - u.mean(axis=0)
    left, singular, _ = np.linalg.svd(centered, full_matrices=False)
    want = left[:, :2] * singular[:2]
    np.testing.assert_allclose(np.abs(got), np.abs(want), rtol=1e-8, atol=1e-10)
    dist = lambda x: np.linalg.norm(x[:, None] - x[None], axis=2)  # noqa: E731
    np.testing.assert_allclose(dist(got), dist(want), rtol=1e-8, atol=1e-10)


def test_rflbat_distance_sum_hand_case():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [30.0, 0.0]])
    # distance sums 32, 31.41, 32.43, 89.02: median 32.21
    assert distance_sum_inliers(points, 1.5) == [0, 1, 2]
    assert distance_sum_inliers(points, 10.0) == [0, 1, 2, 3]
    assert distance_sum_inliers(np.zeros((3, 2)), 1.0) == [0, 1, 2]


# --- DeepSight ------------------------------------------------------------------------------------

def test_deepsight_neups_and_threshold_exceedings():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(6, 5 * 4))
    bias = rng.normal(size=(6, 5))
    got = normalized_update_energies(torch.from_numpy(weight), 5, torch.from_numpy(bias))
    for i in range(6):
        energy = np.abs(weight[i].reshape(5, 4)).sum(axis=1) + np.abs(bias[i])
        np.testing.assert_allclose(got[i], energy ** 2 / (energy ** 2).sum(), rtol=1e-12)
        assert threshold_exceedings(got)[i] == (got[i] > max(0.01, 1 / 5) * got[i].max()).sum()
    # hand case: energies 3, 4, 0 -> NEUPs 9/25, 16/25, 0; bound (1/3) 16/25: TE = 2
    hand = normalized_update_energies(torch.tensor([[3.0, 4.0, 0.0]]), 3, None)
    np.testing.assert_allclose(hand, [[9 / 25, 16 / 25, 0.0]])
    assert threshold_exceedings(hand).tolist() == [2]


def test_deepsight_accepts_clusters_with_few_suspicious():
    clusters = np.array([0, 0, 0, 1, 1, -1, -1])
    suspicious = np.array([False, False, True, True, False, True, False])
    # cluster 0: 1/3 suspicious (not < 1/3: rejected at tau = 1/3); cluster 1: 1/2; noise alone
    assert accepted_models(clusters, suspicious, 1 / 3).tolist() == [False] * 5 + [False, True]
    assert accepted_models(clusters, suspicious, 0.4).tolist() == [True] * 3 + [False] * 3 + [True]


# --- FedML's three sigma --------------------------------------------------------------------------

def test_score_bounds_match_numpy():
    scores = np.array([1.0, 2.0, 2.5, 3.0, 40.0])
    low, high = score_bounds(scores, 2.0, robust=False)
    assert (low, high) == pytest.approx((scores.mean() - 2 * scores.std(ddof=1),
                                         scores.mean() + 2 * scores.std(ddof=1)))
    low, high = score_bounds(scores, 3.0, robust=True)
    mad = 1.4826 * np.median(np.abs(scores - 2.5))
    assert (low, high) == pytest.approx((2.5 - 3 * mad, 2.5 + 3 * mad))


def fedml_score_reference(features: np.ndarray) -> np.ndarray:
    """FedML's ThreeSigmaDefense_Foolsgold.fools_gold_score, written with its loops."""
    n = len(features)
    cs = np.array([[features[i] @ features[j] / np.linalg.norm(features[i])
                    / np.linalg.norm(features[j]) for j in range(n)] for i in range(n)])
    cs -= np.eye(n)
    maxcs = cs.max(axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and maxcs[i] < maxcs[j]:
                cs[i][j] = cs[i][j] * maxcs[i] / maxcs[j]
    alpha = 1 - cs.max(axis=1)
    alpha[alpha > 1.0] = 1.0
    alpha[alpha <= 0.0] = 1e-15
    alpha = alpha / alpha.max()
    alpha[alpha == 1.0] = 0.999999
    return np.log(alpha / (1 - alpha)) + 0.5


@pytest.mark.parametrize("n,d", [(3, 4), (6, 10), (10, 30)])
def test_fedml_foolsgold_score_matches_reference(n, d):
    rng = np.random.default_rng(n)
    h = rng.normal(size=(n, d))
    h[1] = h[0] * 2.0  # two sybils: cosine 1
    got = fedml_foolsgold_scores(torch.from_numpy(h))
    want = fedml_score_reference(h)
    np.testing.assert_allclose(got[2:], want[2:], rtol=1e-9, atol=1e-9)
    # the sybils' alpha = 1 - cos is 0 up to rounding, where the score is ln(alpha) + 0.5 of
    # a rounding error: both at the floor, far below every other client
    assert max(got[0], got[1], want[0], want[1]) < math.log(1e-12) + 0.5 < got[2:].min()


def test_three_sigma_geo_scores_and_the_first_rounds_bound():
    rng = np.random.default_rng(0)
    n, rows, cols = 8, 3, 4
    defense = build_defense({"enable_defense": True, "defense_type": "3sigma_geo",
                             "pretraining_round_num": 2}, Federation(20, n))
    bounds = []
    for r in range(3):
        u = rng.normal(size=(n, rows * cols + rows)) * 0.1
        u[0] += 5.0
        models, g_state, ctx, g = round_of(u, [("fc.weight", (rows, cols)), ("fc.bias", (rows,))],
                                           seed=r)
        ctx.round_index = r
        defense.defend_before_aggregation(models, g_state, ctx)
        feats = np.stack([flat(s)[:rows * cols] for _, s in models])
        z = feats.mean(axis=0)
        for _ in range(2000):  # Weiszfeld's iterations, float64
            dist = np.maximum(np.linalg.norm(feats - z, axis=1), 1e-12)
            z = (feats / dist[:, None]).sum(axis=0) / (1 / dist).sum()
        want = np.linalg.norm(feats - z, axis=1)
        got = [ctx.metrics["3sigma_geo_scores"][100 + i] for i in range(n)]
        np.testing.assert_allclose(got, want, rtol=1e-4)
        bounds.append(ctx.metrics["3sigma_geo_bound"])
        if r == 0:
            assert bounds[0] == pytest.approx(want.mean() + want.std(ddof=1))
        assert ctx.metrics["excluded_clients"] == [100]
    assert bounds[0] == bounds[1] == bounds[2]  # fitted on the first round only


# --- Soteria --------------------------------------------------------------------------------------

def soteria_ratio_reference(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """FedML's / the authors' loop: one backward pass per feature f of the representation r
    (the input of the last Linear), ||d r_f / d x|| / r_f per sample, summed over the batch."""
    x = x.clone().requires_grad_(True)
    r = model[:-1](x)
    out = np.zeros(r.shape[1])
    for f in range(r.shape[1]):
        target = torch.zeros_like(r)
        target[:, f] = 1
        (grad,) = torch.autograd.grad(r, x, target, retain_graph=True)
        out[f] = float((grad.reshape(len(x), -1).norm(dim=1) / r[:, f].detach()).sum())
    return out


@pytest.mark.parametrize("batch,rate", [(1, 0.25), (3, 0.5)])
def test_soteria_mask_prunes_the_smallest_ratios(batch, rate):
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Sigmoid(), torch.nn.Linear(8, 3))
    x = torch.rand(batch, 6, generator=torch.Generator().manual_seed(batch))
    mask = pruning_mask(model, x, rate)
    ratio = soteria_ratio_reference(model, x)
    pruned = np.argsort(ratio, kind="stable")[:int(rate * 8)]
    assert mask.tolist() == [0.0 if f in pruned else 1.0 for f in range(8)]
