"""Small cases whose answers are computed by hand (in the comments), on every backend.

The expected values here are literal numbers or closed-form expressions, not the references.
Where the arithmetic is exact (selections, sums of small integers, halves) the comparison is
exact; elsewhere rtol 1e-14 allows a few float64 roundings in any summation order (or FMA).
They pin the conventions of docs/api.md (even median, trimmed mean's k, Krum's n - f - 2
neighbours and lower-index ties, Bulyan's neighbour count and distance-tie rule, the Weiszfeld
start and stopping rule, centered clipping's step and medoid).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import as_numpy64


def _t(rows, backend, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype, device=backend.device)


def _np(x):
    return x.detach().to("cpu", torch.float64).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)


def _run(rule, rows, backend, dtype=torch.float64, **kwargs):
    return _np(getattr(fedsec, rule)(_t(rows, backend, dtype), **kwargs, backend=backend.kind))


# --- mean ----------------------------------------------------------------------------------------

def test_mean_with_one_outlier(backend):
    # ([1, 2] + [3, 4] + [5, 100]) / 3 = [3, 106/3]
    np.testing.assert_allclose(_run("mean", [[1, 2], [3, 4], [5, 100]], backend), [3.0, 106 / 3], rtol=1e-14)


def test_mean_weighted_by_sample_counts(backend):
    # weights 10, 30, 60 -> 0.1, 0.3, 0.6: [0.1 + 0.9 + 3, 0.2 + 1.2 + 60] = [4, 61.4]
    got = _run("mean", [[1, 2], [3, 4], [5, 100]], backend, weights=[10, 30, 60])
    np.testing.assert_allclose(got, [4.0, 61.4], rtol=1e-14)


def test_mean_weights_as_tensor(backend):
    got = _run("mean", [[1.0], [3.0]], backend, weights=torch.tensor([3.0, 1.0]))
    np.testing.assert_allclose(got, [1.5], rtol=1e-14)  # (3 * 1 + 1 * 3) / 4


# --- median ----------------------------------------------------------------------------------------

def test_median_odd_count(backend):
    np.testing.assert_array_equal(_run("median", [[1], [5], [3]], backend), [3])


def test_median_even_count_is_mean_of_middle_two(backend):
    np.testing.assert_array_equal(_run("median", [[1], [2], [3], [10]], backend), [2.5])
    np.testing.assert_array_equal(_run("median", [[2], [2], [5], [7]], backend), [3.5])


def test_median_per_coordinate_with_outlier(backend):
    # column 0 sorted: 0 1 2 3 1000 -> 2; column 1: -1000 0 1 2 3 -> 1
    rows = [[0, 0], [1, 1], [2, 2], [1000, -1000], [3, 3]]
    np.testing.assert_array_equal(_run("median", rows, backend), [2, 1])


def test_median_of_two_and_of_ties(backend):
    np.testing.assert_array_equal(_run("median", [[1, -4], [2, 4]], backend), [1.5, 0])
    np.testing.assert_array_equal(_run("median", [[7], [7], [7]], backend), [7])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_median_even_count_low_precision(dtype, backend):
    # 1.5 and 2.5 are exact in every dtype: (1.5 + 2.5) / 2 = 2
    got = fedsec.median(_t([[1.5], [2.5], [-7.0], [9.0]], backend, dtype), backend=backend.kind)
    assert got.dtype == dtype
    assert got.item() == 2.0


# --- trimmed mean ---------------------------------------------------------------------------------

@pytest.mark.parametrize("beta,expected", [
    (0.2, 3.0),    # k = floor(1.0) = 1: mean(2, 3, 4)
    (0.19, 22.0),  # k = floor(0.95) = 0: mean(1, 2, 3, 4, 100) = 110 / 5
    (0.4, 3.0),    # k = 2: the middle value
    (0.0, 22.0),   # no trimming: the mean
])
def test_trimmed_mean_by_hand(beta, expected, backend):
    np.testing.assert_allclose(_run("trimmed_mean", [[1], [2], [3], [4], [100]], backend, beta=beta), [expected],
                               rtol=1e-14)


def test_trimmed_mean_ten_clients(backend):
    # 1..9 and 1000, beta = 0.25: k = floor(2.5) = 2, drop 1, 2, 9, 1000: mean(3..8) = 5.5
    rows = [[v] for v in [5, 1000, 3, 1, 9, 2, 8, 4, 6, 7]]
    np.testing.assert_allclose(_run("trimmed_mean", rows, backend, beta=0.25), [5.5], rtol=1e-14)


def test_trimmed_mean_per_coordinate(backend):
    # k = floor(0.34 * 3) = 1: the middle value of each column
    np.testing.assert_array_equal(_run("trimmed_mean", [[1, -5], [2, 0], [30, 1]], backend, beta=0.34), [2, 0])


# --- Krum -------------------------------------------------------------------------------------------

LINE = [[0.0], [1.0], [2.0], [3.0], [100.0]]  # n = 5 = 2f + 3 with f = 1: n - f - 2 = 2 neighbours
# scores: 0 -> 1 + 4 = 5; 1 -> 1 + 1 = 2; 2 -> 1 + 1 = 2; 3 -> 1 + 4 = 5; 100 -> 97^2 + 98^2 = 19013
LINE_SCORES = [5.0, 2.0, 2.0, 5.0, 19013.0]


def test_krum_scores_n_equals_2f_plus_3(backend):
    scores = as_numpy64(fedsec.krum_scores(_t(LINE, backend), f=1, backend=backend.kind))
    np.testing.assert_allclose(scores, LINE_SCORES, rtol=1e-12)


@pytest.mark.parametrize("m,expected", [
    (1, 1.0),    # clients 1 and 2 tie at 2: the lower index, client 1
    (2, 1.5),    # clients 1, 2
    (3, 1.0),    # then clients 0 and 3 tie at 5: client 0 -> mean(0, 1, 2)
    (4, 1.5),    # mean(0, 1, 2, 3)
    (5, 21.2),   # everyone: 106 / 5
])
def test_krum_and_multi_krum_on_a_line(m, expected, backend):
    np.testing.assert_allclose(_run("krum", LINE, backend, f=1, m=m), [expected], rtol=1e-14)


def test_krum_ties_go_to_the_lower_index_not_the_lower_value(backend):
    # Same points in reverse order: clients 1 (value 2) and 2 (value 1) tie -> client 1, value 2
    rows = [[3.0], [2.0], [1.0], [0.0], [100.0]]
    np.testing.assert_array_equal(_run("krum", rows, backend, f=1), [2.0])
    # m = 3: clients 1, 2 then 0 and 3 tie -> client 0: mean(3, 2, 1) = 2
    np.testing.assert_allclose(_run("krum", rows, backend, f=1, m=3), [2.0], rtol=1e-14)


def test_multi_krum_weighted(backend):
    # chosen {1, 2}, weights 1 and 3: (1 * 1 + 3 * 2) / 4 = 1.75
    got = _run("krum", LINE, backend, f=1, m=2, weights=[1, 1, 3, 1, 1])
    np.testing.assert_allclose(got, [1.75], rtol=1e-14)


def test_krum_in_two_dimensions(backend):
    # Unit square corners + its center + two outliers, f = 2, n = 7: 3 neighbours.
    # corners: 0.5 + 1 + 1 = 2.5; center: 0.5 * 3 = 1.5;
    # (10, 10): 162 (to (1,1)), 180.5 (center), 181 -> 523.5; (-10, 10): 181, 200, 200.5 -> 581.5
    rows = [[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5], [10, 10], [-10, 10]]
    scores = as_numpy64(fedsec.krum_scores(_t(rows, backend), f=2, backend=backend.kind))
    np.testing.assert_allclose(scores, [2.5, 2.5, 2.5, 2.5, 1.5, 523.5, 581.5], rtol=1e-12)
    np.testing.assert_array_equal(_run("krum", rows, backend, f=2), [0.5, 0.5])


def test_krum_with_duplicate_points(backend):
    # [0, 0, 0, 5, 5], f = 1: scores 0, 0, 0, 25, 25 -> client 0; m = 4 -> mean(0, 0, 0, 5) = 1.25
    rows = [[0.0], [0.0], [0.0], [5.0], [5.0]]
    np.testing.assert_allclose(as_numpy64(fedsec.krum_scores(_t(rows, backend), f=1, backend=backend.kind)),
                               [0, 0, 0, 25, 25], atol=1e-12)
    np.testing.assert_array_equal(_run("krum", rows, backend, f=1), [0.0])
    np.testing.assert_allclose(_run("krum", rows, backend, f=1, m=4), [1.25], rtol=1e-14)


def test_krum_f0_three_clients(backend):
    # n = 3 = 2f + 3 with f = 0: one neighbour; [0, 1, 3] -> scores 1, 1, 4 -> client 0
    rows = [[0.0], [1.0], [3.0]]
    np.testing.assert_allclose(as_numpy64(fedsec.krum_scores(_t(rows, backend), f=0, backend=backend.kind)),
                               [1, 1, 4], rtol=1e-12)
    np.testing.assert_array_equal(_run("krum", rows, backend, f=0), [0.0])


# --- Bulyan ---------------------------------------------------------------------------------------

def test_bulyan_selection_n_equals_4f_plus_3(backend):
    # f = 1, n = 7, theta = 5. Repeated Krum with min(max(|R| - 3, 1), |R| - 1) neighbours:
    # |R| = 7 (4 nb): scores 0:30 1:15 2:10 3:15 4:30 100:38030 -100:41214 -> client 2
    # |R| = 6 (3 nb): 0:26 1:14 3:14 4:26 -> tie, client 1
    # |R| = 5 (2 nb): 0:25 3:10 4:17 -> client 3
    # |R| = 4 (1 nb): 0:16 4:16 100:9216 -100:10000 -> tie, client 0
    # |R| = 3 (1 nb): 4:9216 100:9216 -100:10816 -> tie, client 4
    # selected values 0..4, median 2, beta = 3 closest: 1, 2, 3 -> 2
    rows = [[0.0], [1.0], [2.0], [3.0], [4.0], [100.0], [-100.0]]
    value, info = fedsec.bulyan(_t(rows, backend), f=1, return_info=True, backend=backend.kind)
    assert info.used == (0, 1, 2, 3, 4)
    np.testing.assert_allclose(_np(value), [2.0], rtol=1e-14)
    np.testing.assert_allclose(as_numpy64(info.scores), [30, 15, 10, 15, 30, 38030, 41214], rtol=1e-12)


def test_bulyan_distance_tie_drops_the_larger_value(backend):
    # Honest clients 0..4 at (0, v), v = -1, 0, 1, 3, 5; outliers 5, 6 at (+-1e4, 0).
    # Selection: the 5 honest ones (the last pick ties an honest client with an outlier at
    # 1e8 + v^2; the lower index wins). Coordinate 1: median 1, distances 2, 1, 0, 2, 4; the
    # 3 closest are 1, 0 and a tie between -1 and 3 -> 3 is dropped: mean(-1, 0, 1) = 0.
    rows = [[0, -1], [0, 0], [0, 1], [0, 3], [0, 5], [1e4, 0], [-1e4, 0]]
    value, info = fedsec.bulyan(_t(rows, backend), f=1, return_info=True, backend=backend.kind)
    assert info.used == (0, 1, 2, 3, 4)
    np.testing.assert_array_equal(_np(value), [0.0, 0.0])


def test_bulyan_even_theta_tie(backend):
    # f = 1, n = 8: theta = 6, beta = 4. Honest v = -1, 0, 1, 3, 5, 6: median (1 + 3) / 2 = 2,
    # distances 3, 2, 1, 1, 3, 4: keep 1, 3, 0 and a tie between -1 and 5 -> 5 dropped:
    # (1 + 3 + 0 - 1) / 4 = 0.75
    rows = [[0, -1], [0, 0], [0, 1], [0, 3], [0, 5], [0, 6], [1e4, 0], [-1e4, 0]]
    value, info = fedsec.bulyan(_t(rows, backend), f=1, return_info=True, backend=backend.kind)
    assert info.used == (0, 1, 2, 3, 4, 5)
    np.testing.assert_array_equal(_np(value), [0.0, 0.75])


def test_bulyan_f0_averages_everyone(backend):
    # f = 0: theta = n, beta = n: the mean of everyone
    rows = [[1.0], [2.0], [6.0]]
    np.testing.assert_allclose(_run("bulyan", rows, backend, f=0), [3.0], rtol=1e-14)


# --- geometric median -----------------------------------------------------------------------------

def test_geometric_median_collinear_points(backend):
    # p0 + t u with t = 0, 1, 10: the geometric median of points on a line is their median, t = 1
    u = np.array([1.0, 2.0, -2.0]) / 3
    p0 = np.array([5.0, -1.0, 2.0])
    rows = p0 + np.array([0.0, 1.0, 10.0])[:, None] * u
    got = _run("geometric_median", rows.tolist(), backend)
    np.testing.assert_allclose(got, p0 + u, atol=1e-4)


def test_geometric_median_weighted_majority(backend):
    # weights 1, 1, 5 on t = 0, 1, 10: the weighted median is t = 10
    u = np.array([1.0, 2.0, -2.0]) / 3
    p0 = np.array([5.0, -1.0, 2.0])
    rows = p0 + np.array([0.0, 1.0, 10.0])[:, None] * u
    got = _run("geometric_median", rows.tolist(), backend, weights=[1, 1, 5])
    np.testing.assert_allclose(got, p0 + 10 * u, atol=1e-4)


def test_geometric_median_symmetric_points(backend):
    # A square around c: the weighted-mean start is already the answer; all distances are 1, so
    # the first step keeps z = c and the objective does not change: one iteration.
    c = np.array([3.0, -2.0])
    rows = c + np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    value, info = fedsec.geometric_median(_t(rows.tolist(), backend), return_info=True, backend=backend.kind)
    np.testing.assert_allclose(_np(value), c, atol=1e-12)
    assert info.iterations == 1
    np.testing.assert_allclose(as_numpy64(info.coefficients), [0.25] * 4, atol=1e-12)


def test_geometric_median_obtuse_triangle_is_the_vertex(backend):
    # The angle at (0, 0) between (4, 0) and (-4, 1) is > 120 degrees: the vertex is the median
    got = _run("geometric_median", [[0.0, 0.0], [4.0, 0.0], [-4.0, 1.0]], backend)
    np.testing.assert_allclose(got, [0.0, 0.0], atol=1e-4)


def test_geometric_median_majority_point(backend):
    # Three clients at 0 and one at 100 (1-D): the median is 0 (the mean would be 25)
    got = _run("geometric_median", [[0.0], [0.0], [0.0], [100.0]], backend)
    np.testing.assert_allclose(got, [0.0], atol=1e-3)


def test_geometric_median_one_step(backend):
    # max_iter = 1 from the mean 11/3 of 0, 1, 10: distances 11/3, 8/3, 19/3, so
    # b ~ (3/11, 3/8, 3/19) and z = (1/8 + 10/19) / (1/11 + 1/8 + 1/19)
    value, info = fedsec.geometric_median(_t([[0.0], [1.0], [10.0]], backend), max_iter=1, return_info=True,
                                          backend=backend.kind)
    expected = (1 / 8 + 10 / 19) / (1 / 11 + 1 / 8 + 1 / 19)
    np.testing.assert_allclose(_np(value), [expected], rtol=1e-13)
    assert info.iterations == 1


def _weiszfeld_step_1d(x, z):
    # z <- sum_i b_i x_i / sum_i b_i, b_i = 1 / |z - x_i| (uniform weights, no distance below nu)
    b = 1.0 / np.abs(np.asarray(x) - z)
    return float(b @ np.asarray(x) / b.sum())


@pytest.mark.parametrize("tol,iterations", [(0.95, 2), (0.5, 3)])
def test_geometric_median_stops_on_the_estimated_remaining_distance(tol, iterations, backend):
    # 1-D 0, 1, 10 from the mean 11/3: z1 = 2.4254, z2 = 1.6227, z3 = 1.1957 (steps 1.2413,
    # 0.8026, 0.4271); the weighted median distance from z_k is z_k (the one to 0). Step 1 has
    # no step before it, so it never stops there. Step 2: q = 0.8026 / 1.2413 = 0.6466, the
    # remaining distance m q / (1 - q) = 1.4687 = 0.905 z2: stops for tol 0.95, not 0.5. Step 3:
    # q = 0.5321, 0.4857 = 0.406 z3 <= 0.5 z3.
    x = [0.0, 1.0, 10.0]
    z = sum(x) / 3
    for _ in range(iterations):
        z = _weiszfeld_step_1d(x, z)
    value, info = fedsec.geometric_median(_t([[v] for v in x], backend), tol=tol, return_info=True,
                                          backend=backend.kind)
    assert info.iterations == iterations
    np.testing.assert_allclose(_np(value), [z], rtol=1e-13)


# --- centered clipping -----------------------------------------------------------------------------

CLIP_ROWS = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 0.0]]


def test_centered_clip_one_far_outlier(backend):
    # From center 0 with tau = 1: the outlier's step (100, 0) is scaled by 1/100 to (1, 0):
    # v = ((0,0) + (1,0) + (0,1) + (1,0)) / 4 = (0.5, 0.25)
    center = torch.zeros(2, dtype=torch.float64, device=backend.device)
    got = _run("centered_clip", CLIP_ROWS, backend, tau=1.0, center=center)
    np.testing.assert_allclose(got, [0.5, 0.25], rtol=1e-14)


def test_centered_clip_outlier_influence_bounded_by_tau(backend):
    # Moving the outlier from 100 to 1e6 cannot move the result: its clipped step is tau / n.
    center = torch.zeros(2, dtype=torch.float64, device=backend.device)
    rows = [r[:] for r in CLIP_ROWS]
    rows[3] = [1e6, 0.0]
    got = _run("centered_clip", rows, backend, tau=1.0, center=center)
    np.testing.assert_allclose(got, [0.5, 0.25], rtol=1e-12)


def test_centered_clip_two_iterations(backend):
    # Second step from v1 = (0.5, 0.25): the three near clients are within tau = 1 (norms 0.559,
    # 0.559, 0.901), steps (-0.5, -0.25), (0.5, -0.25), (-0.5, 0.75); the outlier's step
    # (99.5, -0.25) is scaled to unit length.
    center = torch.zeros(2, dtype=torch.float64, device=backend.device)
    got = _run("centered_clip", CLIP_ROWS, backend, tau=1.0, iters=2, center=center)
    r = math.hypot(99.5, 0.25)
    expected = [0.5 + (-0.5 + 0.5 - 0.5 + 99.5 / r) / 4, 0.25 + (-0.25 - 0.25 + 0.75 - 0.25 / r) / 4]
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_centered_clip_starts_at_the_medoid(backend):
    # 1-D 0, 1, 2, 100: sums of distances 103, 101, 101, 297 -> tie, client 1 (value 1).
    # tau = 0.5: steps -1 -> -0.5, 0, 1 -> 0.5, 99 -> 0.5: v = 1 + 0.5 / 4 = 1.125
    got = _run("centered_clip", [[0.0], [1.0], [2.0], [100.0]], backend, tau=0.5)
    np.testing.assert_allclose(got, [1.125], rtol=1e-14)


def test_centered_clip_large_tau_is_the_mean(backend):
    # No clipping (tau above every distance): one step from anywhere lands on the mean
    center = torch.tensor([7.0, 7.0], dtype=torch.float64, device=backend.device)
    got = _run("centered_clip", CLIP_ROWS, backend, tau=1e6, center=center)
    np.testing.assert_allclose(got, [25.25, 0.25], rtol=1e-14)


@pytest.mark.parametrize("iters", [1, 3])
def test_centered_clip_moves_at_most_tau_per_iteration(iters, backend):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(10, 50))
    X[3] += 1e4  # a far outlier
    center = np.zeros(50)
    tau = 0.2
    got = _run("centered_clip", X.tolist(), backend, tau=tau, iters=iters,
               center=torch.tensor(center, dtype=torch.float64, device=backend.device))
    assert np.linalg.norm(got - center) <= tau * iters * (1 + 1e-12)


# --- accumulation precision (docs/api.md: sums in float32 at least, output in the input's dtype) -

LINE64 = [[1000.0 + 4 * i] for i in range(64)]  # exact in float16; sum 72064 > 65504 (float16 max)


@pytest.mark.parametrize("rule,kwargs", [
    ("mean", {}),
    ("trimmed_mean", {"beta": 0.1}),       # k = 6, symmetric: 1126
    ("median", {}),                        # (1124 + 1128) / 2
    ("krum", {"f": 0, "m": 64}),           # everyone
    ("geometric_median", {}),              # symmetric about the mean: stays at 1126
    ("centered_clip", {"tau": 1e6}),       # no clipping: from the medoid to the mean
], ids=["mean", "trimmed_mean", "median", "multi_krum", "geometric_median", "centered_clip"])
def test_float16_sums_do_not_overflow(rule, kwargs, backend):
    # The mean of 1000, 1004, ..., 1252 is 1126 (exact in float16); a float16 running sum
    # would overflow to inf after ~60 clients.
    got = getattr(fedsec, rule)(_t(LINE64, backend, torch.float16), **kwargs, backend=backend.kind)
    assert got.dtype == torch.float16
    assert got.item() == 1126.0, f"{rule}: {got.item()}"


def test_bfloat16_sums_keep_small_terms(backend):
    # Client 0 holds 300, 299 clients hold 1: mean 599 / 300 = 1.9967, 2.0 in bfloat16. A bfloat16
    # running sum from 300 stays at 300 (ulp 2 there; 301 rounds to even, 300) and gives 1.0.
    rows = [[300.0]] + [[1.0]] * 299
    got = fedsec.mean(_t(rows, backend, torch.bfloat16), backend=backend.kind)
    assert got.dtype == torch.bfloat16
    assert got.item() == 2.0, got.item()
