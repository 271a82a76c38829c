"""Clients with NaN or Inf (docs/api.md, on_nonfinite): excluded and reported by default, never
reaching the output; on_nonfinite="raise" raises fedsec.NonFiniteUpdateError naming them; the
rule's n is the number of clients left, and too few left is a ValueError with the numbers.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import fedsec
from fedsec.aggregation import reference as ref
from support.aggregation import (RULE_CASE_IDS, as_numpy64, combine_atol, names, quantised_cloud, rule_case, seed_of,
                      to_float64, to_form)

N_FINITE, D = 9, 1001
BAD_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


def _poisoned(bad_clients: dict[int, str], coordinate: int | None = 500, n_finite: int = N_FINITE):
    """n_finite finite clients plus the bad ones inserted at the given positions (client ->
    value name); the bad value sits in one coordinate (or the whole row when coordinate is
    None). Returns (X with the bad rows, X without them, the positions of the finite ones)."""
    finite = quantised_cloud(seed_of("nonfinite", n_finite, D), n_finite, D)
    n = n_finite + len(bad_clients)
    X = np.zeros((n, D))
    keep = [i for i in range(n) if i not in bad_clients]
    X[keep] = finite
    for c, name in bad_clients.items():
        X[c] = finite[0]
        if coordinate is None:
            X[c] = BAD_VALUES[name]
        else:
            X[c, coordinate] = BAD_VALUES[name]
    return X, np.array(finite), keep


def _kwargs_for_all(case, finite, keep, n):
    """The case's arguments built for the finite clients; weights get an entry for every client."""
    kwargs = case.kwargs(finite)
    if "weights" in kwargs:
        w = np.full(n, 1.5)
        w[keep] = kwargs["weights"]
        kwargs = dict(kwargs, weights=w)
    return kwargs


def _check_excluded(case, X, finite, keep, bad, form, dtype, backend, what):
    n = len(X)
    kwargs_all = _kwargs_for_all(case, finite, keep, n)
    updates = to_form(X, form, dtype, backend.device)
    out, info = getattr(fedsec, case.rule)(updates, **kwargs_all, return_info=True, backend=backend.kind)
    assert info.n == n, f"{what}: info.n={info.n}, expected {n} (clients given)"
    assert set(info.excluded) == set(bad), f"{what}: excluded {info.excluded}, expected clients {sorted(bad)}"
    for c in bad:
        assert re.search(r"non-?finite|nan|inf", info.excluded[c], re.I), f"{what}: reason {info.excluded[c]!r}"
    assert not set(info.used) & set(bad), f"{what}: used {info.used} includes an excluded client"
    want = case.reference(finite, case.kwargs(finite))
    if case.rule == "krum_scores":
        scores = as_numpy64(out)
        assert np.all(np.isinf(scores[sorted(bad)])) and np.all(scores[sorted(bad)] > 0), f"{what}: {scores}"
        np.testing.assert_allclose(scores[keep], want, rtol=1e-12, err_msg=what)
        return
    got = to_float64(out, form, D)
    assert np.isfinite(got).all(), f"{what}: the output holds non-finite values"
    atol = combine_atol(dtype, len(finite) + 1, float(np.abs(finite).max())) + 1e-9
    err = np.abs(got - want)
    assert err.max() <= atol, f"{what}: max |err| {err.max():.3g} > {atol:.3g} vs the rule on the finite clients"


@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
@pytest.mark.parametrize("bad_value", list(BAD_VALUES))
@pytest.mark.parametrize("position", [0, 4, 9], ids=["client0", "client4", "last"])
def test_nonfinite_client_is_excluded(case_id, bad_value, position, backend):
    X, finite, keep = _poisoned({position: bad_value})
    case = rule_case(case_id, N_FINITE)
    what = f"{case_id} {bad_value} in client {position} backend={backend.id}"
    _check_excluded(case, X, finite, keep, [position], "tensor", "float32", backend, what)


@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
@pytest.mark.parametrize("form", ["tensor-list", "state_dict"])
def test_several_nonfinite_clients_in_lists(case_id, form, backend):
    # A NaN row in client 0 (the natural reference point) and an Inf in one coordinate of
    # client 6 (for state_dicts: in the last parameter only).
    X, finite, keep = _poisoned({0: "nan", 6: "inf"}, coordinate=None)
    X[6] = finite[1]
    X[6, D - 1] = np.inf
    case = rule_case(case_id, N_FINITE)
    _check_excluded(case, X, finite, keep, [0, 6], form, "float32", backend,
                    f"{case_id} form={form} backend={backend.id}")


@pytest.mark.parametrize("case_id", ["mean", "median", "krum", "geometric_median", "bulyan"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_nonfinite_in_other_dtypes(case_id, dtype, backend):
    X, finite, keep = _poisoned({3: "inf", 7: "nan"})
    case = rule_case(case_id, N_FINITE)
    _check_excluded(case, X, finite, keep, [3, 7], "tensor", dtype, backend, f"{case_id} {dtype} backend={backend.id}")


def test_float16_overflow_to_inf_is_excluded(backend):
    # 1e5 is beyond float16's range (65504): casting it gives inf, which must be excluded
    X, finite, keep = _poisoned({2: "nan"})
    X[2] = finite[0]
    X[2, 10] = 1e5
    case = rule_case("median", N_FINITE)
    _check_excluded(case, X, finite, keep, [2], "tensor", "float16", backend, f"float16 overflow backend={backend.id}")


@pytest.mark.parametrize("backend", ["native-cpu", "torch-cpu"], indirect=True)
@pytest.mark.parametrize("case_id", ["mean", "median", "krum", "centered_clip"])
def test_nonfinite_numpy_list(case_id, backend):
    X, finite, keep = _poisoned({1: "nan", 5: "-inf"})
    case = rule_case(case_id, N_FINITE)
    _check_excluded(case, X, finite, keep, [1, 5], "ndarray-list", "float32", backend,
                    f"{case_id} numpy list backend={backend.id}")


@pytest.mark.parametrize("rule,kwargs", [("mean", {}), ("krum", {"f": 1, "m": 4}), ("geometric_median", {})],
                         ids=["mean", "multi_krum", "geometric_median"])
def test_nonfinite_client_with_zero_weight(rule, kwargs, backend):
    """A zero weight does not make a NaN harmless (0 * NaN = NaN): the client is excluded and
    reported like any other."""
    X, finite, keep = _poisoned({0: "nan"}, coordinate=None)
    weights = np.ones(len(X))
    weights[0] = 0.0
    out, info = getattr(fedsec, rule)(to_form(X, "tensor", "float64", backend.device), weights=weights, **kwargs,
                                      return_info=True, backend=backend.kind)
    assert list(info.excluded) == [0], info.excluded
    got = to_float64(out, "tensor")
    assert np.isfinite(got).all()
    want = {"mean": lambda: finite.mean(axis=0), "krum": lambda: ref.krum(finite, 1, 4),
            "geometric_median": lambda: ref.geometric_median(finite)}[rule]()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(finite).max())


def test_trimmed_mean_k_uses_clients_left(backend):
    # 10 clients, one NaN: n = 9, beta = 0.1 -> k = floor(0.9) = 0, the plain mean of the 9
    # (with n = 10 it would be k = 1).
    X, finite, keep = _poisoned({9: "nan"})
    out = fedsec.trimmed_mean(to_form(X, "tensor", "float64", backend.device), beta=0.1, backend=backend.kind)
    np.testing.assert_allclose(to_float64(out, "tensor"), finite.mean(axis=0), rtol=0, atol=1e-12)


def test_nonfinite_center_client_for_centered_clip(backend):
    """With center=None the medoid is the start: a NaN client must not be picked as medoid, nor
    spoil the distances of the others."""
    X, finite, keep = _poisoned({0: "nan"}, coordinate=None)
    case = rule_case("centered_clip", N_FINITE)
    _check_excluded(case, X, finite, keep, [0], "tensor", "float64", backend, f"centered_clip backend={backend.id}")


# --- on_nonfinite="raise" -------------------------------------------------------------------------

@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
@pytest.mark.parametrize("form", ["tensor", "state_dict"])
def test_raise_names_the_client(case_id, form, backend):
    X, finite, keep = _poisoned({13: "nan"}, n_finite=16)
    case = rule_case(case_id, 16)
    kwargs = _kwargs_for_all(case, finite, keep, len(X))
    with pytest.raises(fedsec.NonFiniteUpdateError, match=r"\b13\b"):
        getattr(fedsec, case.rule)(to_form(X, form, "float32", backend.device), **kwargs, on_nonfinite="raise",
                                   backend=backend.kind)


@pytest.mark.parametrize("case_id", ["mean", "median", "krum_scores", "bulyan"])
def test_raise_names_every_bad_client(case_id, backend):
    X, finite, keep = _poisoned({0: "inf", 11: "nan"}, n_finite=16)
    case = rule_case(case_id, 16)
    kwargs = _kwargs_for_all(case, finite, keep, len(X))
    with pytest.raises(fedsec.NonFiniteUpdateError) as excinfo:
        getattr(fedsec, case.rule)(to_form(X, "tensor-list", "float32", backend.device), **kwargs,
                                   on_nonfinite="raise", backend=backend.kind)
    message = str(excinfo.value)
    assert re.search(r"\b0\b", message) and re.search(r"\b11\b", message), message


def test_nonfinite_update_error_is_a_value_error():
    assert issubclass(fedsec.NonFiniteUpdateError, ValueError)


def test_raise_is_silent_on_finite_input(backend):
    X = quantised_cloud(seed_of("finite", 9, D), 9, D)
    out = fedsec.median(to_form(X, "tensor", "float32", backend.device), on_nonfinite="raise", backend=backend.kind)
    np.testing.assert_array_equal(to_float64(out, "tensor"), np.median(X, axis=0))


# --- too few clients left -------------------------------------------------------------------------

def _with_bad(n_total: int, bad: list[int]):
    X = np.array(quantised_cloud(seed_of("few", n_total, 20), n_total, 20), copy=True)
    for c in bad:
        X[c, 3] = np.nan
    return X


@pytest.mark.parametrize("rule,n_total,kwargs,bad,patterns", [
    # krum needs n > 2f + 2: 5 given, 1 excluded -> n = 4 with f = 1
    ("krum", 5, {"f": 1}, [2], [r"n\s*=\s*4\b", r"f\s*=\s*1\b"]),
    ("krum_scores", 5, {"f": 1}, [0], [r"n\s*=\s*4\b", r"f\s*=\s*1\b"]),
    # multi-Krum needs m <= n: 6 given, 2 excluded -> n = 4 < m = 5
    ("krum", 6, {"f": 0, "m": 5}, [1, 4], [r"m\s*=\s*5\b", r"n\s*=\s*4\b"]),
    # bulyan needs n >= 4f + 3: 7 given, 1 excluded -> n = 6 with f = 1
    ("bulyan", 7, {"f": 1}, [6], [r"n\s*=\s*6\b", r"f\s*=\s*1\b"]),
    # every client non-finite: n = 0
    ("mean", 3, {}, [0, 1, 2], [r"\b0\b"]),
    ("median", 2, {}, [0, 1], [r"\b0\b"]),
    ("geometric_median", 2, {}, [0, 1], [r"\b0\b"]),
    ("centered_clip", 2, {"tau": 1.0}, [0, 1], [r"\b0\b"]),
], ids=["krum", "krum_scores", "multi_krum_m", "bulyan", "mean", "median", "geometric_median", "centered_clip"])
def test_too_few_clients_left(rule, n_total, kwargs, bad, patterns, backend):
    X = _with_bad(n_total, bad)
    with pytest.raises(ValueError, match=names(*patterns)) as excinfo:
        getattr(fedsec, rule)(to_form(X, "tensor", "float32", backend.device), **kwargs, backend=backend.kind)
    assert not isinstance(excinfo.value, fedsec.NonFiniteUpdateError), \
        "on_nonfinite='exclude' must not raise NonFiniteUpdateError"


# --- large but finite updates are not "non-finite" ------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("scale", [1e19, 1e30], ids=["1e19", "1e30"])
def test_large_finite_updates_are_not_excluded(scale, dtype, backend):
    """Every client finite, entries ~scale (representable in float32/bfloat16; their squares
    are not, but docs/api.md accumulates the Gram matrix in float64, where they are). Nobody
    may be excluded, and the Krum scores must match the reference."""
    X = quantised_cloud(seed_of("large", 7, 100), 7, 100) * scale
    X = np.asarray(torch.from_numpy(X).to(getattr(torch, dtype)).double().numpy())
    scores, info = fedsec.krum_scores(to_form(X, "tensor", dtype, backend.device), f=1, return_info=True,
                                      backend=backend.kind)
    assert info.excluded == {}, f"finite clients excluded: {info.excluded}"
    want = ref.krum_scores(X, 1)
    np.testing.assert_allclose(as_numpy64(scores), want, rtol=1e-4)


ATTACK_RULES = [("krum", {"f": 1}), ("bulyan", {"f": 1}), ("geometric_median", {}), ("centered_clip", {"tau": 1.0}),
                ("krum_scores", {"f": 1})]


@pytest.mark.parametrize("rule,kwargs", ATTACK_RULES, ids=[r for r, _ in ATTACK_RULES])
@pytest.mark.parametrize("attacker", [0, 4], ids=["attacker-client0", "attacker-client4"])
@pytest.mark.parametrize("magnitude", [1e6, 1e15, 3e19], ids=["1e6", "1e15", "3e19"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_huge_finite_attacker(rule, kwargs, attacker, magnitude, dtype, backend):
    """A Byzantine client sends a finite update of ``magnitude`` everywhere (exact in float32),
    the 8 honest ones are the quantised cloud (|x| < 4). Nothing is non-finite, so nothing may
    be excluded (docs/api.md), and the rules must answer as the float64 reference does, also
    when the attacker is client 0 (the natural center of a centered Gram matrix): distances among
    the honest clients are then what a wrong centering destroys."""
    n, d = 9, 1000
    X = np.array(quantised_cloud(seed_of("attack", n, d), n, d), copy=True)
    X[attacker] = magnitude
    out, info = getattr(fedsec, rule)(to_form(X, "tensor", dtype, backend.device), **kwargs, return_info=True,
                                      backend=backend.kind)
    what = f"{rule} attacker=client {attacker} magnitude={magnitude:g} {dtype} backend={backend.id}"
    assert info.excluded == {}, f"{what}: excluded {info.excluded} (every client is finite)"
    if rule == "krum_scores":
        # as accurate as in test_near_identical: 1e-3 relative
        np.testing.assert_allclose(as_numpy64(out), ref.krum_scores(X, 1), rtol=1e-3, err_msg=what)
        return
    if rule == "krum":
        assert list(info.used) == ref.krum_selection(X, 1), f"{what}: used {info.used}"
    if rule == "bulyan":
        assert list(info.used) == ref.bulyan_selection(X, 1), f"{what}: used {info.used}"
    want = {"krum": lambda: ref.krum(X, 1), "bulyan": lambda: ref.bulyan(X, 1),
            "geometric_median": lambda: ref.geometric_median(X),
            "centered_clip": lambda: ref.centered_clip(X, 1.0)}[rule]()
    got = to_float64(out, "tensor")
    # 1e-4 absolute on the honest scale; the Weiszfeld iterate stops while still far out
    # (the attacker dominates the objective), so for it also ~8 eps32 of its own size.
    atol = 1e-4 + 1e-6 * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=what)
