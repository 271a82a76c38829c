"""return_info=True: the AggregationInfo fields (docs/api.md) are consistent with the value and
with the references: used / excluded / scores / coefficients / iterations / backend."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import (RULE_CASE_IDS, as_numpy64, quantised_cloud, rule_case, seed_of,
                      to_float64, to_form)
from fedsec.aggregation import reference as ref

N, D = 9, 1001
COMBINING = {"mean", "krum", "multi_krum", "geometric_median", "centered_clip"}
SCORED = {"krum", "multi_krum", "krum_scores", "bulyan"}
ITERATIVE = {"geometric_median", "centered_clip"}


def _data():
    return quantised_cloud(seed_of("info", N, D), N, D)


def _expected_used(case_id, X, kwargs):
    if case_id == "krum":
        return ref.krum_selection(X, kwargs["f"], 1)
    if case_id == "multi_krum":
        return ref.krum_selection(X, kwargs["f"], kwargs["m"])
    if case_id == "bulyan":
        return ref.bulyan_selection(X, kwargs["f"])
    return list(range(len(X)))


@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
def test_info_fields(case_id, backend):
    X = _data()
    case = rule_case(case_id, N)
    kwargs = case.kwargs(X)
    value, info = getattr(fedsec, case.rule)(to_form(X, "tensor", "float64", backend.device), **kwargs,
                                             return_info=True, backend=backend.kind)
    what = f"{case_id} backend={backend.id}"
    assert isinstance(info, fedsec.AggregationInfo), what
    assert info.rule == case.rule, f"{what}: info.rule={info.rule!r}"
    assert info.n == N, what
    assert info.excluded == {}, what
    assert isinstance(info.used, tuple) and all(isinstance(u, int) for u in info.used), f"{what}: {info.used!r}"
    assert list(info.used) == sorted(set(info.used)), f"{what}: used must be ascending: {info.used}"
    assert list(info.used) == _expected_used(case_id, X, kwargs), f"{what}: used={info.used}"
    assert info.backend == backend.info_name, f"{what}: info.backend={info.backend!r}"

    if case_id in SCORED:
        f = kwargs["f"]
        assert info.scores is not None, what
        scores = as_numpy64(info.scores)
        assert scores.shape == (N,), what
        np.testing.assert_allclose(scores, ref.krum_scores(X, f), rtol=1e-12, err_msg=what)
    else:
        assert info.scores is None, f"{what}: scores should be None"

    if case_id in ITERATIVE:
        assert isinstance(info.iterations, int) and info.iterations >= 1, f"{what}: {info.iterations!r}"
    else:
        assert info.iterations is None, f"{what}: iterations should be None"

    if case_id in COMBINING:
        c = info.coefficients
        assert isinstance(c, np.ndarray) and c.dtype == np.float64 and c.shape == (N,), f"{what}: {c!r}"
        # The value is sum_i c_i x_i (no center here, so no remainder)
        got = to_float64(value, "tensor")
        np.testing.assert_allclose(c @ X, got, rtol=0, atol=1e-9 * np.abs(X).max(), err_msg=what)
        np.testing.assert_allclose(c.sum(), 1.0, rtol=1e-12, err_msg=what)
        assert np.all(c >= -1e-15), f"{what}: negative coefficients {c}"
        assert set(np.flatnonzero(c)) <= set(info.used), f"{what}: a coefficient outside used"
    else:
        assert info.coefficients is None, f"{what}: coefficients should be None"


def test_krum_used_are_the_m_lowest_scores(backend):
    X = _data()
    for f, m in [(1, 1), (2, 4), (3, 2), (0, N)]:
        _, info = fedsec.krum(to_form(X, "tensor", "float32", backend.device), f=f, m=m, return_info=True,
                              backend=backend.kind)
        scores = as_numpy64(info.scores)
        lowest = sorted(np.argsort(scores, kind="stable")[:m].tolist())
        assert list(info.used) == lowest, f"f={f} m={m}: used {info.used}, lowest scores at {lowest}"
        c = info.coefficients
        np.testing.assert_allclose(c[list(info.used)], 1.0 / m, rtol=1e-12)
        assert np.count_nonzero(c) == m


def test_krum_scores_info_matches_returned_scores(backend):
    X = _data()
    scores, info = fedsec.krum_scores(to_form(X, "tensor", "float64", backend.device), f=2, return_info=True,
                                      backend=backend.kind)
    np.testing.assert_array_equal(as_numpy64(scores), as_numpy64(info.scores))
    assert info.rule == "krum_scores" and info.used == tuple(range(N))


def test_mean_coefficients_are_the_normalised_weights(backend):
    X = _data()
    w = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8])
    value, info = fedsec.mean(to_form(X, "tensor", "float64", backend.device), weights=w, return_info=True,
                              backend=backend.kind)
    np.testing.assert_allclose(info.coefficients, w / w.sum(), rtol=1e-14)
    assert info.used == tuple(range(1, N)), f"a zero-weight client cannot reach the output: used={info.used}"
    np.testing.assert_allclose(to_float64(value, "tensor"), (w / w.sum()) @ X, rtol=0, atol=1e-12)


def test_weighted_multi_krum_coefficients(backend):
    X = _data()
    w = np.linspace(1.0, 3.0, N)
    _, info = fedsec.krum(to_form(X, "tensor", "float64", backend.device), f=1, m=4, weights=w, return_info=True,
                          backend=backend.kind)
    used = list(info.used)
    want = np.zeros(N)
    want[used] = w[used] / w[used].sum()
    np.testing.assert_allclose(info.coefficients, want, rtol=1e-14, atol=1e-300)


def test_geometric_median_coefficients_and_iterations(backend):
    X = _data()
    _, b, iterations = ref.geometric_median(X, return_details=True)
    _, info = fedsec.geometric_median(to_form(X, "tensor", "float64", backend.device), return_info=True,
                                      backend=backend.kind)
    assert info.iterations == iterations
    np.testing.assert_allclose(info.coefficients, b, rtol=1e-8)


@pytest.mark.parametrize("max_iter", [1, 2, 5])
def test_geometric_median_stops_at_max_iter(max_iter, backend):
    X = _data()
    _, info = fedsec.geometric_median(to_form(X, "tensor", "float64", backend.device), max_iter=max_iter, tol=0.0,
                                      return_info=True, backend=backend.kind)
    _, _, iterations = ref.geometric_median(X, max_iter=max_iter, tol=0.0, return_details=True)
    assert info.iterations == iterations == max_iter


@pytest.mark.parametrize("iters", [1, 4])
def test_centered_clip_with_center_remainder(iters, backend):
    """Output = sum_i c_i x_i + (1 - sum_i c_i) * center, and iterations == iters."""
    X = _data()
    center = np.round(X.mean(axis=0) * 16 + 3) / 16
    tau = 10.0
    value, info = fedsec.centered_clip(to_form(X, "tensor", "float64", backend.device), tau=tau, iters=iters,
                                       center=torch.tensor(center, device=backend.device), return_info=True,
                                       backend=backend.kind)
    c = info.coefficients
    got = to_float64(value, "tensor")
    np.testing.assert_allclose(c @ X + (1 - c.sum()) * center, got, rtol=0, atol=1e-9 * np.abs(X).max())
    np.testing.assert_allclose(got, ref.centered_clip(X, tau, iters, center), rtol=0, atol=1e-9 * np.abs(X).max())
    assert info.iterations == iters
    assert info.used == tuple(range(N))


def test_excluded_client_has_no_coefficient_and_infinite_score(backend):
    X = np.array(_data(), copy=True)
    X[4, 7] = np.nan
    for rule, kwargs in [("mean", {}), ("krum", {"f": 1, "m": 3}), ("geometric_median", {}),
                         ("centered_clip", {"tau": 5.0})]:
        value, info = getattr(fedsec, rule)(to_form(X, "tensor", "float64", backend.device), **kwargs,
                                            return_info=True, backend=backend.kind)
        assert list(info.excluded) == [4] and 4 not in info.used, (rule, info)
        assert info.coefficients[4] == 0.0, (rule, info.coefficients)
        finite = np.delete(np.arange(N), 4)
        got = to_float64(value, "tensor")
        np.testing.assert_allclose(info.coefficients[finite] @ X[finite], got, rtol=0, atol=1e-9 * 4, err_msg=rule)
        if rule == "krum":
            assert np.isinf(info.scores[4]) and info.scores[4] > 0
            np.testing.assert_allclose(info.scores[finite], ref.krum_scores(X[finite], 1), rtol=1e-12)


@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
def test_without_return_info_only_the_value(case_id, backend):
    X = _data()
    case = rule_case(case_id, N)
    kwargs = case.kwargs(X)
    updates = to_form(X, "tensor", "float32", backend.device)
    plain = getattr(fedsec, case.rule)(updates, **kwargs, backend=backend.kind)
    assert not isinstance(plain, tuple), f"{case_id}: return_info=False must return the value alone"
    value, _ = getattr(fedsec, case.rule)(updates, **kwargs, return_info=True, backend=backend.kind)
    np.testing.assert_array_equal(as_numpy64(plain), as_numpy64(value))


def test_info_is_frozen():
    _, info = fedsec.median(torch.zeros((3, 2)), return_info=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.rule = "mean"


def test_auto_backend_reports_native(device):
    """backend="auto" is native when the module was built for the device."""
    x = torch.ones((3, 4), device=device)
    _, info = fedsec.mean(x, return_info=True)
    if device == "cpu":
        assert info.backend == ("cpu-native" if fedsec.build_info()["native"] else "torch")
    else:
        assert info.backend == "cuda-native"


def test_info_n_counts_clients_given_in_state_dicts(backend):
    X = np.array(_data(), copy=True)
    X[0, 0] = np.inf
    _, info = fedsec.trimmed_mean(to_form(X, "state_dict", "float32", backend.device), beta=0.1, return_info=True,
                                  backend=backend.kind)
    assert info.n == N and list(info.excluded) == [0] and info.used == tuple(range(1, N))
    assert info.rule == "trimmed_mean"
