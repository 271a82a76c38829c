"""The Gram-route rules on hand-computed cases, on every input form, with non-finite clients and
with bad input (every backend where a backend matters).

Hand cases: the expected values are closed forms worked out in the comments (rtol 1e-12: a few
float64 roundings in any order). Forms: every accepted input form gives the reference's value
in the input's form. Non-finite: a NaN or Inf client is excluded and reported, and the rule
equals the reference on the finite clients. Bad input: each impossible parameter is a
ValueError/TypeError whose message names the parameter and the value.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import (combine_atol, continuous_cloud, names, number,
                                 quantised_cloud, seed_of, to_float64, to_form)
from fedsec.aggregation import reference as ref

CPU_BACKENDS = ("native-cpu", "torch-cpu")


def _t(rows, backend):
    return torch.tensor(rows, dtype=torch.float64, device=backend.device)


def _run(rule, rows, backend, **kwargs):
    out, info = getattr(fedsec, rule)(_t(rows, backend), **kwargs, backend=backend.kind,
                                      return_info=True)
    return out.detach().cpu().numpy(), info


# --- hand cases -----------------------------------------------------------------------------------

def test_mda_by_hand(backend):
    # 0, 1, 2, 10 with f = 1: the 3-subsets' diameters are 2 ({0, 1, 2}), 10, 9, 10: mean 1.
    got, info = _run("mda", [[0], [1], [2], [10]], backend, f=1)
    assert info.used == (0, 1, 2)
    np.testing.assert_allclose(got, [1.0], rtol=1e-12)


def test_monna_by_hand(backend):
    # Trusted 0 at 0; distances 0, 1, 3, 10, 11; n - f = 3 nearest: 0, 1, 3 -> mean 4/3.
    got, info = _run("monna", [[0], [1], [3], [10], [11]], backend, f=2, trusted=0)
    assert info.used == (0, 1, 2)
    np.testing.assert_allclose(got, [4 / 3], rtol=1e-12)
    # Trusted 4 at 11: 11, 10, 3 -> 8.
    got, info = _run("monna", [[0], [1], [3], [10], [11]], backend, f=2, trusted=4)
    assert info.used == (2, 3, 4)
    np.testing.assert_allclose(got, [8.0], rtol=1e-12)


def test_caf_by_hand(backend):
    # 0, 0, 0, 10, f = 1 (stop once sum c <= n - 2f = 2). Step 1: mean 2.5, variance
    # (3 * 2.5^2 + 7.5^2) / 4 = 18.75, tau = 6.25, 6.25, 6.25, 56.25: c = 8/9, 8/9, 8/9, 0
    # (sum 8/3 > 2). Step 2: mean 0, variance 0 < 18.75: kept, and nothing left to filter.
    got, info = _run("caf", [[0], [0], [0], [10]], backend, f=1)
    assert info.iterations == 2 and info.used == (0, 1, 2)
    np.testing.assert_allclose(info.coefficients, [1 / 3, 1 / 3, 1 / 3, 0], rtol=1e-12)
    np.testing.assert_allclose(got, [0.0], atol=1e-15)


def test_caf_with_f_zero_is_the_mean(backend):
    got, info = _run("caf", [[1, 2], [3, 4], [5, 30]], backend, f=0)
    assert info.iterations == 0
    np.testing.assert_allclose(got, [3.0, 12.0], rtol=1e-12)


def test_smea_by_hand(backend):
    # 0, 2, 3, 10 with f = 1: variances of the 3-subsets {0,2,3}: 14/9, {0,2,10}: 168/9,
    # {0,3,10}: 158/9, {2,3,10}: 134/9 -> {0, 2, 3}, mean 5/3.
    got, info = _run("smea", [[0], [2], [3], [10]], backend, f=1)
    assert info.used == (0, 1, 2)
    np.testing.assert_allclose(got, [5 / 3], rtol=1e-12)


def test_smea_and_mda_differ_where_spread_and_diameter_disagree(backend):
    # 0, 0.02, 1.7, 2.65, 3.6 with f = 2 (3 kept). {0, 0.02, 1.7}: range 1.7 (the smallest
    # diameter), variance 0.6348 (two points clumped at one end); {1.7, 2.65, 3.6}: range 1.9,
    # variance 1.9^2 / 6 = 0.6017 (the smallest: evenly spread). Every other triple spans
    # more than 2.6. MDA keeps the first, SMEA the second.
    X = [[0.0], [0.02], [1.7], [2.65], [3.6]]
    got_mda, info_mda = _run("mda", X, backend, f=2)
    got_smea, info_smea = _run("smea", X, backend, f=2)
    assert info_mda.used == (0, 1, 2) and info_smea.used == (2, 3, 4)
    np.testing.assert_allclose(got_mda, [1.72 / 3], rtol=1e-12)
    np.testing.assert_allclose(got_smea, [7.95 / 3], rtol=1e-12)


def test_dnc_by_hand(backend):
    # subsample >= d: every coordinate, no draw. Mean (2.75, 2.75); the centered rows'
    # scatter [[70.75, 69.75], [69.75, 70.75]] has top eigenvector (1, 1)/sqrt(2); scores
    # (z . v)^2 = 15.125, 10.125, 10.125, 105.125; f = 1, c = 1: keep 3 -> (1/3, 1/3).
    got, info = _run("dnc", [[0, 0], [1, 0], [0, 1], [10, 10]], backend, f=1, subsample=5)
    assert info.used == (0, 1, 2)
    np.testing.assert_allclose(got, [1 / 3, 1 / 3], rtol=1e-12)


def test_dnc_keeps_floor_of_n_minus_cf(backend):
    # n = 4, f = 1, c = 1.5: floor(4 - 1.5) = 2 kept: the two lowest scores (10.125, tied:
    # clients 1 and 2) -> (0.5, 0.5).
    got, info = _run("dnc", [[0, 0], [1, 0], [0, 1], [10, 10]], backend, f=1, subsample=5, c=1.5)
    assert info.used == (1, 2)
    np.testing.assert_allclose(got, [0.5, 0.5], rtol=1e-12)


def test_fltrust_by_hand(backend):
    # g0 = (1, 0). (2, 0): cos 1, rescaled to (1, 0); (0, 3): cos 0; (1, 1): cos 1/sqrt(2),
    # rescaled to (1, 1)/sqrt(2); (-1, 0): cos -1 -> 0. Result ((1, 0) + (1/2, 1/2)) / (1 +
    # 1/sqrt(2)).
    out, info = fedsec.fltrust(_t([[2, 0], [0, 3], [1, 1], [-1, 0]], backend), _t([1, 0], backend),
                               backend=backend.kind, return_info=True)
    np.testing.assert_allclose(out.cpu().numpy(), np.array([1.5, 0.5]) / (1 + 1 / math.sqrt(2)),
                               rtol=1e-12)
    np.testing.assert_allclose(info.scores, [1, 0, 1 / math.sqrt(2), 0], rtol=1e-12, atol=1e-15)
    assert info.used == (0, 2)


def test_fltrust_with_no_trust_is_the_zero_update(backend):
    # Every cosine <= 0: no update (the center itself when one is given).
    rows = _t([[-1, 0], [0, 2]], backend)
    out, info = fedsec.fltrust(rows, _t([1, 0], backend), backend=backend.kind, return_info=True)
    assert info.used == () and torch.equal(out.cpu(), torch.zeros(2, dtype=torch.float64))
    center = _t([5, 5], backend)
    out = fedsec.fltrust(rows + center, _t([1, 0], backend), center=center, backend=backend.kind)
    np.testing.assert_allclose(out.cpu().numpy(), [5, 5], rtol=1e-12)


def test_flame_by_hand(backend):
    # Cosines: the first four point along (1, 0) (within 0.05 rad), the last along (0, 1).
    # HDBSCAN (min_cluster_size 3) admits 0..3. Norms 1, sqrt(4.01), 3, sqrt(4.01), 5: median
    # S = sqrt(4.01); (3, 0) is clipped to (S, 0); mean x = (1 + 2 + S + 2) / 4, y = 0.
    X = [[1, 0], [2, 0.1], [3, 0], [2, -0.1], [0, 5]]
    got, info = _run("flame", X, backend, noise_lambda=0.0)
    assert info.used == (0, 1, 2, 3)
    np.testing.assert_allclose(got, [(5 + math.sqrt(4.01)) / 4, 0.0], rtol=1e-12, atol=1e-15)


def test_signguard_by_hand(backend):
    # Norms sqrt2, sqrt5, sqrt5, sqrt8, sqrt1800: median M = sqrt5; 0.1 M < ||g|| < 3 M drops
    # the last. Every client's signs are all positive: one sign cluster. (2, 2) is clipped by
    # sqrt5 / sqrt8. Mean of (1, 1), (1, 2), (2, 1), (2, 2) sqrt(5/8).
    got, info = _run("signguard", [[1, 1], [1, 2], [2, 1], [2, 2], [30, 30]], backend, fraction=1.0)
    assert info.used == (0, 1, 2, 3)
    want = (np.array([4.0, 4.0]) + np.array([2.0, 2.0]) * math.sqrt(5 / 8)) / 4
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_signguard_separates_flipped_signs(backend):
    # Same norms, but two of seven clients have every sign flipped: the sign features split
    # (1, 0, 0) from (0, 0, 1) and the larger cluster (the five) is kept.
    rows = [[1, 2, 1], [2, 1, 1], [1, 1, 2], [2, 2, 1], [1, 2, 2], [-1, -2, -1], [-2, -1, -1]]
    _, info = _run("signguard", rows, backend, fraction=1.0)
    assert info.used == (0, 1, 2, 3, 4)


def test_clipped_clustering_by_hand(backend):
    # Cosine distances 0 within (1..4, 0) and within (0, 5), (0, 6), 1 across: two clusters,
    # the larger is 0..3. Norms 1..6: median 3.5; (4, 0) is clipped to (3.5, 0).
    rows = [[1, 0], [2, 0], [3, 0], [4, 0], [0, 5], [0, 6]]
    got, info = _run("clipped_clustering", rows, backend)
    assert info.used == (0, 1, 2, 3)
    np.testing.assert_allclose(got, [(1 + 2 + 3 + 3.5) / 4, 0.0], rtol=1e-12)
    got, _ = _run("clipped_clustering", rows, backend, tau=1.5)  # the caller's bound: 1, 1.5, 1.5, 1.5 -> 5.5 / 4
    np.testing.assert_allclose(got, [5.5 / 4, 0.0], rtol=1e-12)


def test_clipped_clustering_tie_goes_to_client_zero(backend):
    _, info = _run("clipped_clustering", [[0, 5], [1, 0], [0, 6], [2, 0]], backend)
    assert info.used == (0, 2)


# --- the center frame -----------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["fltrust", "flame", "signguard", "clipped_clustering"])
def test_center_frame_equals_updates_shifted(rule, backend):
    """rule(models, center=c) = c + rule(models - c): the frame only moves the origin."""
    U = quantised_cloud(seed_of("frame", rule), 9, 200)
    c = np.round(np.random.default_rng(1).normal(0, 0.5, 200) * 16) / 16
    extra = {"server_update": _t(U.mean(axis=0), backend)} if rule == "fltrust" else {}
    if rule == "flame":
        extra["noise_lambda"] = 0.0
    plain = getattr(fedsec, rule)(_t(U, backend), **extra, backend=backend.kind)
    framed = getattr(fedsec, rule)(_t(U + c, backend), **extra, center=_t(c, backend),
                                   backend=backend.kind)
    np.testing.assert_allclose(framed.cpu().numpy(), plain.cpu().numpy() + c, rtol=0, atol=1e-12)


# --- every input form -----------------------------------------------------------------------------

N, D = 9, 1001
FORMS = ("tensor", "tensor-list", "state_dict", "ndarray", "ndarray-list", "ndarray-state_dict")


def _form_cases(X):
    rng = np.random.default_rng(4)
    server = np.round((X.mean(axis=0) + rng.normal(0, 0.3, X.shape[1])) * 16) / 16
    return {
        "fltrust": ({"server_update": server}, lambda: ref.fltrust(X, server)),
        "dnc": ({"f": 2, "subsample": 300, "iters": 3},
                lambda: ref.dnc(X, 2, subsample=300, iters=3)),
        "flame": ({"noise_lambda": 0.01, "seed": 3}, lambda: ref.flame(X, 0.01, 3)),
        "mda": ({"f": 2}, lambda: ref.mda(X, 2)),
        "monna": ({"f": 2, "trusted": 5}, lambda: ref.monna(X, 2, 5)),
        "caf": ({"f": 2}, lambda: ref.caf(X, 2)),
        "smea": ({"f": 2}, lambda: ref.smea(X, 2)),
        "signguard": ({"seed": 1}, lambda: ref.signguard(X, seed=1)),
        "clipped_clustering": ({}, lambda: ref.clipped_clustering(X)),
    }


def _in_form(value, form, backend):
    """One update (a vector of length D) in the form of one client of ``form``."""
    return to_form(np.asarray(value)[None], form, "float32", backend.device)[0]


@pytest.mark.parametrize("rule", ["fltrust", "dnc", "flame", "mda", "monna", "caf", "smea",
                                  "signguard", "clipped_clustering"])
@pytest.mark.parametrize("form", FORMS)
def test_every_form_matches_reference(rule, form, backend):
    if form.startswith("ndarray") and backend.id not in CPU_BACKENDS:
        pytest.skip("numpy forms run on the CPU backends")
    X = np.array(quantised_cloud(seed_of("gram-forms", rule), N, D))
    X[:2] += 1.5  # two outlying clients
    kwargs, reference = _form_cases(X)[rule]
    if "server_update" in kwargs:
        kwargs = dict(kwargs, server_update=_in_form(kwargs["server_update"], form, backend))
    updates = to_form(X, form, "float32", backend.device)
    out = getattr(fedsec, rule)(updates, **kwargs, backend=backend.kind)
    if form.endswith("state_dict"):
        assert isinstance(out, dict) and list(out) == list(updates[0])
    else:
        assert isinstance(out, np.ndarray if form.startswith("ndarray") else torch.Tensor)
    got = to_float64(out, form, D)
    want = reference()
    atol = combine_atol("float32", N + 1, float(np.abs(X).max()) + float(np.linalg.norm(X[0])))
    err = np.abs(got - want).max()
    assert err <= atol + 2 ** -22 * np.abs(want).max(), f"{rule} form={form}: max |err| {err:.3g}"


# --- non-finite clients ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["fltrust", "dnc", "flame", "mda", "monna", "caf", "smea",
                                  "signguard", "clipped_clustering"])
@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("coordinate", [None, 17], ids=["row", "one-coordinate"])
def test_nonfinite_client_is_excluded(rule, bad, coordinate, backend):
    """A client with NaN/Inf (the whole row, or one coordinate: DnC's and SignGuard's drawn
    coordinates may miss it) is excluded, reported, and the result is the rule on the others."""
    finite = np.array(quantised_cloud(seed_of("gram-nonfinite", rule), 8, 300))
    position = 3
    X = np.insert(finite, position, finite[0], axis=0)
    if coordinate is None:
        X[position] = float(bad)
    else:
        X[position, coordinate] = float(bad)
    server = np.round(finite.mean(axis=0) * 16) / 16
    kwargs = {"fltrust": {"server_update": _t(server, backend)}, "dnc": {"f": 1, "subsample": 30},
              "flame": {"noise_lambda": 0.0}, "mda": {"f": 2}, "monna": {"f": 2, "trusted": 6},
              "caf": {"f": 2}, "smea": {"f": 2}, "signguard": {"fraction": 0.05},
              "clipped_clustering": {}}[rule]
    out, info = getattr(fedsec, rule)(_t(X, backend), **kwargs, backend=backend.kind,
                                      return_info=True)
    assert set(info.excluded) == {position}, f"{rule}: excluded {info.excluded}"
    assert position not in info.used
    on_finite = dict(kwargs)
    if rule == "monna":
        on_finite["trusted"] = 5  # client 6 of the nine is 5 of the eight finite ones
    if rule == "fltrust":
        on_finite["server_update"] = kwargs["server_update"]
    want = getattr(fedsec, rule)(_t(finite, backend), **on_finite, backend=backend.kind)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.cpu().numpy(), want.cpu().numpy(), rtol=0, atol=1e-12)
    with pytest.raises(fedsec.NonFiniteUpdateError, match=rf"\[{position}\]"):
        getattr(fedsec, rule)(_t(X, backend), **kwargs, backend=backend.kind, on_nonfinite="raise")


def test_monna_trusted_client_nonfinite_is_an_error(backend):
    X = quantised_cloud(seed_of("monna-nan"), 7, 20).copy()
    X[2, 4] = np.nan
    with pytest.raises(ValueError, match=names("trusted", r"\b2\b", "non-finite")):
        fedsec.monna(_t(X, backend), 1, 2, backend=backend.kind)


def test_fltrust_nonfinite_server_update_is_an_error(backend):
    X = quantised_cloud(seed_of("fltrust-nan"), 5, 20)
    server = np.zeros(20)
    server[3] = np.inf
    with pytest.raises(ValueError, match=names("server_update", "non-finite")):
        fedsec.fltrust(_t(X, backend), _t(server, backend), backend=backend.kind)


# --- bad input ------------------------------------------------------------------------------------

def _X(n=5, d=12):
    return torch.tensor(np.random.default_rng(0).standard_normal((n, d)))


@pytest.mark.parametrize("rule", ["mda", "monna", "caf", "smea"])
def test_f_too_large(rule, backend):
    """These rules need n > 2f (ByzFL's requirement): the message says the numbers."""
    extra = {"trusted": 0} if rule == "monna" else {}
    with pytest.raises(ValueError, match=names(rule, "n > 2f", "n=5", "f=3")):
        getattr(fedsec, rule)(_X().to(backend.device), 3, **extra, backend=backend.kind)
    getattr(fedsec, rule)(_X().to(backend.device), 2, **extra, backend=backend.kind)  # 5 > 4


def test_dnc_needs_a_client_left(backend):
    with pytest.raises(ValueError, match=names("dnc", "n - c\\*f >= 1", "n=5", "c=2.5", "f=2")):
        fedsec.dnc(_X().to(backend.device), 2, c=2.5, backend=backend.kind)


def test_dnc_with_no_client_kept_every_time(backend):
    # n = 2, f = 1: each draw keeps the lower score of two; with d = 1 and subsample 1 the
    # scores tie and client 0 is kept every time, so force disjoint draws: 4 coordinates, one
    # where client 0 is the outlier and one where client 1 is; 40 draws meet both.
    X = torch.tensor([[0.0, 9.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=names("dnc", "no client", "40 draws")):
        fedsec.dnc(X.to(backend.device), 1, subsample=1, iters=40, c=2.0, backend=backend.kind)


@pytest.mark.parametrize("rule,kwargs,key,value", [
    ("mda", {"f": -1}, "f", -1),
    ("dnc", {"f": 1, "subsample": 0}, "subsample", 0),
    ("dnc", {"f": 1, "iters": 0}, "iters", 0),
    ("dnc", {"f": 1, "c": -0.5}, "c", -0.5),
    ("dnc", {"f": 1, "seed": -1}, "seed", -1),
    ("flame", {"noise_lambda": -0.1}, "noise_lambda", -0.1),
    ("signguard", {"fraction": 0.0}, "fraction", 0.0),
    ("signguard", {"fraction": 1.5}, "fraction", 1.5),
    ("signguard", {"upper": 0.0}, "upper", 0.0),
    ("clipped_clustering", {"tau": 0.0}, "tau", 0.0),
    ("monna", {"f": 1, "trusted": -1}, "trusted", -1),
])
def test_parameter_out_of_range(rule, kwargs, key, value):
    with pytest.raises(ValueError, match=names(key, number(value))):
        getattr(fedsec, rule)(_X(), **kwargs)


def test_signguard_bounds_in_order():
    with pytest.raises(ValueError, match=names("lower", "upper", "0.5", "0.4")):
        fedsec.signguard(_X(), lower=0.5, upper=0.4)


def test_monna_trusted_out_of_range():
    with pytest.raises(ValueError, match=names("trusted=5", "5 updates", "0 to 4")):
        fedsec.monna(_X(), 1, 5)


@pytest.mark.parametrize("server,error,pattern", [
    (torch.zeros(13, dtype=torch.float64), ValueError, ("server_update", "shape")),
    (torch.zeros(12, dtype=torch.float32), TypeError, ("server_update", "float32", "float64")),
    ([0.0] * 12, TypeError, ("server_update",)),
])
def test_fltrust_server_update_of_the_wrong_layout(server, error, pattern):
    with pytest.raises(error, match=names(*pattern)):
        fedsec.fltrust(_X(), server)


def test_fltrust_server_update_state_dict_keys():
    dicts = to_form(_X().numpy(), "state_dict", "float64")
    server = dict(dicts[0])
    del server["fc.weight"]
    with pytest.raises(ValueError, match=names("server_update")):
        fedsec.fltrust(dicts, server)


# --- pre-aggregators ------------------------------------------------------------------------------

PRE_RULES = {
    "dnc": ({"f": 1, "subsample": 100}, lambda M, kw: ref.dnc(M, **kw)),
    "flame": ({"noise_lambda": 0.01, "seed": 2}, lambda M, kw: ref.flame(M, **kw)),
    "mda": ({"f": 2}, lambda M, kw: ref.mda(M, **kw)),
    "caf": ({"f": 2}, lambda M, kw: ref.caf(M, **kw)),
    "smea": ({"f": 2}, lambda M, kw: ref.smea(M, **kw)),
    "signguard": ({"fraction": 0.5, "seed": 4}, lambda M, kw: ref.signguard(M, **kw)),
    "clipped_clustering": ({}, lambda M, kw: ref.clipped_clustering(M, **kw)),
}


@pytest.mark.parametrize("rule", list(PRE_RULES))
@pytest.mark.parametrize("chain", ["nnm", "bucketing+arc-center"])
def test_pre_equals_the_reference_on_the_mixed_updates(rule, chain, backend):
    """rule(x, pre=P) is the reference rule applied to fedsec.pre.apply(x, P), the mixed
    updates materialised (NNM; bucketing then ARC around a center, whose remainders the mixed
    updates carry)."""
    seed = seed_of("gram-pre", rule)
    # NNM's weights (1/9) are not binary fractions, so a mixed coordinate that is zero in exact
    # arithmetic comes out 0 or +-1e-17 depending on the summation order (the CPU's kernels);
    # SignGuard counts zero signs, so its NNM case uses values that never cancel exactly.
    exact = (rule, chain) != ("signguard", "nnm")
    X = np.array(quantised_cloud(seed, 11, 300) if exact
                 else continuous_cloud(seed, 11, 300, "float64"))
    X[:2] += 1.0
    T = _t(X, backend)
    if chain == "nnm":
        pre = fedsec.pre.NNM(2)
    else:
        center = _t(np.round(X.mean(axis=0) * 8) / 8, backend)
        pre = [fedsec.pre.Bucketing(s=2, seed=3), fedsec.pre.ARC(1, center=center)]
    kwargs, reference = PRE_RULES[rule]
    if chain != "nnm" and "f" in kwargs:  # 6 buckets: f = 2 needs n > 4 (MDA, CAF, SMEA)
        kwargs = dict(kwargs, f=1)
    mixed = fedsec.pre.apply(T, pre, backend=backend.kind).cpu().numpy()
    got = getattr(fedsec, rule)(T, **kwargs, pre=pre, backend=backend.kind)
    want = reference(mixed, kwargs)
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=0,
                               atol=1e-9 * float(np.abs(mixed).max()),
                               err_msg=f"{rule} pre={chain} backend={backend.id}")


@pytest.mark.parametrize("rule", ["monna", "fltrust"])
def test_rules_without_pre(rule):
    """MoNNA's trusted client and FLTrust's server update are not mixtures: no pre=."""
    import inspect

    assert "pre" not in inspect.signature(getattr(fedsec, rule)).parameters
