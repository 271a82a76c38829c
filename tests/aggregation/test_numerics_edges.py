"""Numerics at the edges (docs/api.md): updates far from magnitude 1, sums near the top of a
dtype's range, weights whose sum overflows, medoid ties, the Weiszfeld stopping rule, and the
checks of weights' shape and of the thread count (issue #16, items 7 to 12).

The property tests draw seeded random inputs and compare every backend with the float64
references. Most use conftest.quantised_cloud scaled by 2^e for e in [-100, 100] (magnitudes
1e-30 to 1e30; float16 keeps to its own range): every value is exact in every dtype and every
backend's Gram matrix is exact after its fallbacks (float32 products that under- or overflow are
redone in float64), so the discrete choices, exact ties included, must equal the reference's.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import (TORCH_DTYPES, combine_atol, continuous_cloud, distance_atol, eps, names,
                      quantised_cloud, rounded, seed_of)
from fedsec.aggregation import reference as ref

DTYPES = tuple(TORCH_DTYPES)
# Power-of-two magnitudes 2^e that keep quantised_cloud's values (k / 16, |k| <= 63) normal
# numbers of the dtype: float16's range is 6e-5 .. 65504.
EXPONENTS = {"float16": (-10, 12), "bfloat16": (-100, 100), "float32": (-100, 100), "float64": (-100, 100)}
RULES = ("mean", "median", "trimmed_mean", "krum_scores", "krum", "geometric_median", "bulyan",
         "centered_clip")
SEEDS = range(8)


def _tensor(X: np.ndarray, dtype: str, device: str) -> torch.Tensor:
    return torch.from_numpy(np.array(X, dtype=np.float64)).to(TORCH_DTYPES[dtype]).to(device)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _assert_close(got, want, atol, what: str) -> None:
    got, want = _np(got), _np(want)
    err = np.abs(got - want)
    bad = ~(err <= atol)  # NaN too
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {err.size} off, max |err| {np.nanmax(err):.3g} "
                           f"(tolerance {np.max(atol):.3g}); got {got.reshape(-1)[:4]}, expected {want.reshape(-1)[:4]}")


def _scaled_case(seed: int, dtype: str):
    """(X, n, d, e, what): a quantised cloud times 2^e, some clients duplicated (exact ties)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(7, 13))
    d = int(rng.choice([1, 2, 9, 200]))
    e = int(rng.integers(*EXPONENTS[dtype], endpoint=True))
    X = np.array(quantised_cloud(seed_of("edges", seed, n, d), n, d), copy=True)
    if seed % 2:
        X[n - 1] = X[int(rng.integers(0, n - 1))]  # a duplicate: Krum and the medoid tie
    return np.ldexp(X, e), n, d, e, f"seed={seed} n={n} d={d} e={e} dtype={dtype}"


# --- items 7 and 8: magnitudes far from 1 -------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_rule_at_magnitudes_from_1e_minus30_to_1e30(seed, rule, dtype, backend):
    X, n, d, e, what = _scaled_case(seed, dtype)
    what = f"{rule} {what} backend={backend.id}"
    scale = float(np.abs(X).max())
    D = ref.pairwise_sq_distances(X)
    kwargs = {"trimmed_mean": {"beta": 0.2}, "krum_scores": {"f": 1}, "krum": {"f": 1, "m": 2},
              "bulyan": {"f": 1}}.get(rule, {})
    if rule == "centered_clip":
        kwargs["tau"] = 0.5 * float(np.median(np.sqrt(D[D > 0])))
    out, info = getattr(fedsec, rule)(_tensor(X, dtype, backend.device), **kwargs, return_info=True,
                                      backend=backend.kind)
    assert info.excluded == {}, f"{what}: finite clients excluded: {info.excluded}"
    if rule == "krum_scores":
        diam2 = float(D.max())
        atol = (n - 3) * (distance_atol(dtype, d, diam2) + d * eps("float64") * diam2)
        _assert_close(out, ref.krum_scores(X, 1, D), atol, what)
        return
    if rule == "krum":
        assert list(info.used) == ref.krum_selection(X, 1, 2, D), f"{what}: used {info.used}"
        want, terms = ref.krum(X, 1, 2, D=D), 2
    elif rule == "bulyan":
        assert list(info.used) == ref.bulyan_selection(X, 1, D), f"{what}: used {info.used}"
        want, terms = ref.bulyan(X, 1, D), n - 4
    elif rule == "median":
        want, terms = ref.median(X), 2
    elif rule == "trimmed_mean":
        want, terms = ref.trimmed_mean(X, 0.2), n - 2 * math.floor(0.2 * n)
    elif rule == "centered_clip":
        want, terms = ref.centered_clip(X, kwargs["tau"], 1, D=D), n + 1
    elif rule == "geometric_median":
        want, terms = ref.geometric_median(X), n
    else:
        want, terms = ref.mean(X), n
    # The n x n float64 solvers (Weiszfeld, clipping) add rounding of ~1e-9 of the spread.
    atol = combine_atol(dtype, terms, scale) + 1e-9 * math.sqrt(float(D.max()))
    _assert_close(out, want, atol, what)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("seed", SEEDS)
def test_krum_scores_of_tiny_updates(seed, dtype, backend):
    """Continuous float32/bfloat16 updates of magnitude 1e-30 to 1e-19: float32 products of
    their differences underflow (below 1e-38), which the fast Gram path must not hide."""
    rng = np.random.default_rng(seed)
    magnitude = 10.0 ** rng.uniform(-30, -19)
    X = rounded(continuous_cloud(seed_of("tiny", seed), 9, 300, "float64") * magnitude, dtype)
    scores, info = fedsec.krum_scores(_tensor(X, dtype, backend.device), f=2, return_info=True,
                                      backend=backend.kind)
    want = ref.krum_scores(X, 2)
    what = f"seed={seed} magnitude={magnitude:.3g} {dtype} backend={backend.id}"
    np.testing.assert_allclose(_np(scores), want, rtol=1e-4, err_msg=what)
    assert int(np.argmin(_np(scores))) == int(np.argmin(want)), what


@pytest.mark.parametrize("e", [-600, 530, 1000], ids=["1e-181", "1e160", "1e301"])
@pytest.mark.parametrize("rule", RULES)
def test_float64_updates_beyond_the_range_of_their_products(rule, e, backend):
    """Finite float64 updates near 1e160 and 1e301, whose squared distances overflow float64,
    and near 1e-181, whose squares underflow: a matter of precision (a Gram pass on the updates
    scaled by a power of two), never a reason to exclude a client. The references run on the
    unscaled updates: every rule commutes with scaling by 2^e (nu and tau scaled with it);
    Krum scores beyond the float64 range are inf (or 0)."""
    n, d = 9, 40
    X = np.array(quantised_cloud(seed_of("huge", n, d), n, d), copy=True)
    X[n - 1] = X[2]  # exact ties
    D = ref.pairwise_sq_distances(X)
    tau = 0.5 * float(np.median(np.sqrt(D[D > 0])))
    kwargs = {"trimmed_mean": {"beta": 0.2}, "krum_scores": {"f": 1}, "krum": {"f": 1, "m": 2},
              "bulyan": {"f": 1}, "centered_clip": {"tau": math.ldexp(tau, e)}}.get(rule, {})
    out, info = getattr(fedsec, rule)(_tensor(np.ldexp(X, e), "float64", backend.device), **kwargs,
                                      return_info=True, on_nonfinite="raise", backend=backend.kind)
    what = f"{rule} 2^{e} backend={backend.id}"
    assert info.excluded == {}, f"{what}: excluded {info.excluded}"
    if rule == "krum_scores":
        with np.errstate(over="ignore"):
            want = np.ldexp(ref.krum_scores(X, 1, D), 2 * e)
        np.testing.assert_allclose(_np(out), want, rtol=1e-12, err_msg=what)
        return
    want = {"mean": lambda: ref.mean(X), "median": lambda: ref.median(X),
            "trimmed_mean": lambda: ref.trimmed_mean(X, 0.2), "krum": lambda: ref.krum(X, 1, 2, D=D),
            "geometric_median": lambda: ref.geometric_median(X, nu=math.ldexp(1e-6, -e)),
            "bulyan": lambda: ref.bulyan(X, 1, D), "centered_clip": lambda: ref.centered_clip(X, tau, 1, D=D)}[rule]()
    if rule in ("krum", "bulyan"):
        chosen = ref.krum_selection(X, 1, 2, D) if rule == "krum" else ref.bulyan_selection(X, 1, D)
        assert list(info.used) == chosen, f"{what}: used {info.used}, expected {chosen}"
    atol = combine_atol("float64", n + 1, float(np.abs(X).max())) + 1e-9 * math.sqrt(float(D.max()))
    _assert_close(np.ldexp(_np(out), -e), want, atol, what)


# --- item 9: sums near the top of the range, weights whose sum overflows -------------------------

TOP = {"float32": float(torch.finfo(torch.float32).max), "bfloat16": float(torch.finfo(torch.bfloat16).max),
       "float64": float(np.finfo(np.float64).max)}


@pytest.mark.parametrize("signs", ["positive", "mixed"])
@pytest.mark.parametrize("dtype", list(TOP))
@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "bulyan"])
def test_coordinate_rules_near_the_largest_value(rule, dtype, signs, backend):
    """Values between half the dtype's largest value and the largest: any sum of two overflows
    (trimmed mean's, the even median's, Bulyan's closest-to-median test), the result does not."""
    rng = np.random.default_rng(seed_of("top", rule, dtype, signs))
    n, d = 11, 64
    unit = rng.uniform(0.5, 1.0, (n, d)) * (rng.choice([-1.0, 1.0], (n, d)) if signs == "mixed" else 1.0)
    X = rounded(unit * TOP[dtype], dtype)
    if rule == "median":
        X = X[:-1]  # an even count: the mean of the two middle values
    kwargs = {"trimmed_mean": {"beta": 0.2}, "bulyan": {"f": 1}}.get(rule, {})
    out, info = getattr(fedsec, rule)(_tensor(X, dtype, backend.device), **kwargs, return_info=True,
                                      on_nonfinite="raise", backend=backend.kind)
    # The references would overflow too: they run on X / 2^e ~ 1 (exact) and scale back.
    e = math.frexp(TOP[dtype])[1]
    small = np.ldexp(X, -e)
    want = np.ldexp({"median": lambda: ref.median(small), "trimmed_mean": lambda: ref.trimmed_mean(small, 0.2),
                     "bulyan": lambda: ref.bulyan(small, 1)}[rule](), e)
    if rule == "bulyan":
        assert list(info.used) == ref.bulyan_selection(small, 1), f"{rule} {dtype}: used {info.used}"
    terms = {"median": 2, "trimmed_mean": n - 2 * math.floor(0.2 * n), "bulyan": n - 4}[rule]
    atol = combine_atol(dtype, terms, TOP[dtype])
    assert np.isfinite(_np(out)).all(), f"{rule} {dtype} {signs} backend={backend.id}: {_np(out)[:4]}"
    _assert_close(out, want, atol, f"{rule} {dtype} {signs} backend={backend.id}")


@pytest.mark.parametrize("rule", ["mean", "krum", "geometric_median"])
def test_weights_whose_sum_overflows(rule, backend):
    """Finite weights near the float64 maximum: the normalised weights are their proportions,
    not zeros or NaN from an infinite total."""
    n, d = 9, 30
    X = quantised_cloud(seed_of("heavy", n, d), n, d)
    w = np.linspace(0.5, 1.0, n) * np.finfo(np.float64).max
    kwargs = {"krum": {"f": 1, "m": 4}}.get(rule, {})
    out = getattr(fedsec, rule)(_tensor(X, "float64", backend.device), weights=w, **kwargs, backend=backend.kind)
    proportions = w / w.max()
    want = {"mean": lambda: ref.mean(X, proportions), "krum": lambda: ref.krum(X, 1, 4, proportions),
            "geometric_median": lambda: ref.geometric_median(X, proportions)}[rule]()
    _assert_close(out, want, combine_atol("float64", n, float(np.abs(X).max())) + 1e-9, f"{rule} backend={backend.id}")


# --- item 10: one medoid tie rule -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(12))
def test_medoid_ties_in_one_dimension(seed, dtype, backend):
    """1-D updates, an even count: the two middle clients' sums of distances to the others are
    equal (every point between them is a 1-D median), so rounding, which differs between
    backends, must not decide which one centered clipping starts from (docs/api.md: sums within
    a relative 1e-6 are ties, the lowest index wins)."""
    rng = np.random.default_rng(seed)
    n = 2 * int(rng.integers(2, 9))
    low, high = EXPONENTS[dtype]
    magnitude = 2.0 ** rng.uniform(low, high)
    X = rounded(rng.standard_normal((n, 1)) * magnitude, dtype)
    D = ref.pairwise_sq_distances(X)
    tau = 0.25 * float(np.median(np.sqrt(D[D > 0])))
    out, info = fedsec.centered_clip(_tensor(X, dtype, backend.device), tau, return_info=True, backend=backend.kind)
    what = f"seed={seed} n={n} magnitude={magnitude:.3g} {dtype} backend={backend.id}"
    start = ref.medoid(X, D)
    # From the medoid, one step of at most tau / n per client: the start has the largest
    # coefficient (1 - ..., the others at most tau / (n |x_i - v|) <= 1 / n).
    assert int(np.argmax(info.coefficients)) == start, f"{what}: coefficients {info.coefficients}, medoid {start}"
    _assert_close(out, ref.centered_clip(X, tau, 1, D=D), combine_atol(dtype, n + 1, float(np.abs(X).max())), what)


def test_medoid_tie_rule_on_exact_sums():
    """The rule itself, on distances taken as exact (solvers.medoid and the reference): sums
    4 + 2e-6 and 4 tie (5e-7 relative), 4 + 8e-6 and 4 do not (2e-6)."""
    from fedsec.aggregation import solvers

    def rows_summing_to(sums):
        # Each row's two off-diagonal square roots are half its sum (the rule reads row sums).
        D = np.repeat((np.asarray(sums)[:, None] / 2) ** 2, 3, axis=1)
        np.fill_diagonal(D, 0.0)
        return D

    for sums, expected in [([4 + 2e-6, 4.0, 4 + 8e-6], 0), ([4 + 8e-6, 4.0, 4 + 2e-6], 1)]:
        D = rows_summing_to(sums)
        assert solvers.medoid(D) == expected, sums
        assert ref.medoid(None, D) == expected, sums


# --- item 11: the Weiszfeld stopping rule -------------------------------------------------------

def _lower_weighted_median(values: np.ndarray, a: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    return float(values[order][np.searchsorted(np.cumsum(a[order]), 0.5 * a.sum())])


@pytest.mark.parametrize("seed", range(20))
def test_geometric_median_default_reaches_1e_minus6(seed, backend):
    """Gaussian n=5, d=7 clients: with the defaults the point is within 1e-6 of the exact
    minimiser, relative to the weighted median distance from it to the clients (and to its
    norm), and the rule, not max_iter, ended the iterations."""
    X = np.random.default_rng(seed).standard_normal((5, 7))
    value, info = fedsec.geometric_median(_tensor(X, "float64", backend.device), return_info=True,
                                          backend=backend.kind)
    exact = ref.geometric_median(X, tol=0.0, max_iter=100000)
    s = _lower_weighted_median(np.linalg.norm(X - exact, axis=1), np.full(5, 0.2))
    error = float(np.linalg.norm(_np(value) - exact))
    what = f"seed={seed} backend={backend.id} iterations={info.iterations}"
    assert error <= 1e-6 * s, f"{what}: |z - z*| = {error:.3g}, {error / s:.3g} of s = {s:.3g}"
    assert error <= 1e-6 * float(np.linalg.norm(exact)), f"{what}: |z - z*| = {error:.3g}, |z*| = {np.linalg.norm(exact):.3g}"
    assert info.iterations < 100, what


@pytest.mark.parametrize("tol", [1e-3, 1e-5, 1e-9])
@pytest.mark.parametrize("shape", [(5, 7), (9, 20), (17, 1000)], ids=["5x7", "9x20", "17x1000"])
def test_geometric_median_tolerance_is_the_relative_accuracy(tol, shape):
    """docs/api.md: where the steps shrink geometrically the returned point is within about
    tol of the minimiser, relative to the weighted median distance (2x allowed for the
    estimate's ratio of steps still changing)."""
    worst = 0.0
    for seed in range(30):
        X = np.random.default_rng(seed_of("tol", seed, shape)).standard_normal(shape)
        exact = ref.geometric_median(X, tol=0.0, max_iter=100000)
        s = _lower_weighted_median(np.linalg.norm(X - exact, axis=1), np.full(shape[0], 1.0 / shape[0]))
        value, info = fedsec.geometric_median(X, tol=tol, max_iter=1000, return_info=True)
        worst = max(worst, float(np.linalg.norm(value - exact)) / s)
    assert worst <= 2 * tol, f"worst |z - z*| / s = {worst:.3g} for tol={tol}"


# --- item 12: weights' shape, the thread count ----------------------------------------------------

@pytest.mark.parametrize("shape", [(9, 1), (3, 3), (1, 9), ()], ids=["9x1", "3x3", "1x9", "scalar"])
@pytest.mark.parametrize("rule", ["mean", "krum", "geometric_median"])
def test_weights_must_be_one_dimensional(rule, shape, backend):
    X = _tensor(quantised_cloud(seed_of("w2d", 9, 5), 9, 5), "float32", backend.device)
    w = np.ones(shape)
    kwargs = {"krum": {"f": 1}}.get(rule, {})
    with pytest.raises(ValueError, match=names("weights", "1-D", r"n=9", re.escape(str(shape)))):
        getattr(fedsec, rule)(X, weights=w, **kwargs, backend=backend.kind)
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        getattr(fedsec, rule)(X, weights=torch.ones(shape), **kwargs, backend=backend.kind)


@pytest.mark.parametrize("threads", [0, -3])
def test_set_num_threads_refuses_non_positive(threads):
    before = fedsec.build_info()["num_threads"]
    with pytest.raises(ValueError, match=names("threads", ">= 1", rf"(?<![\d-]){threads}\b")):
        fedsec.set_num_threads(threads)
    assert fedsec.build_info()["num_threads"] == before


@pytest.mark.parametrize("threads", [2.5, "4", True, None])
def test_set_num_threads_refuses_non_integers(threads):
    with pytest.raises(TypeError, match=names("threads", "integer", re.escape(repr(threads)))):
        fedsec.set_num_threads(threads)


def test_bad_fedsec_num_threads_raises_at_the_first_aggregation():
    """FEDSEC_NUM_THREADS is read when the native CPU kernels first need their thread count: a
    value that is not a positive integer is a ValueError naming the variable and the value
    there (importing fedsec still works), and a corrected value is then used."""
    code = r"""
import os, numpy as np
import fedsec
X = np.ones((3, 4))
for value in ["0", "-3", "abc", "2x", ""]:
    os.environ["FEDSEC_NUM_THREADS"] = value
    try:
        fedsec.mean(X, backend="native")
        print("accepted", repr(value))
    except ValueError as exc:
        print("refused", repr(value), "|", exc)
os.environ["FEDSEC_NUM_THREADS"] = "3"
print("mean", fedsec.mean(X, backend="native").tolist(), "threads", fedsec.build_info()["num_threads"])
"""
    env = dict(os.environ, FEDSEC_NUM_THREADS="abc")  # set at start-up too: `import fedsec` must not fail
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for value, line in zip(["0", "-3", "abc", "2x", ""], lines):
        assert line.startswith(f"refused {value!r} |"), line
        assert "FEDSEC_NUM_THREADS" in line and f"'{value}'" in line and "positive integer" in line, line
    assert lines[-1] == "mean [1.0, 1.0, 1.0, 1.0] threads 3", lines[-1]
