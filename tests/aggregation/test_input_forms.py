"""Every accepted input form (docs/api.md "Inputs") gives the same answer, in the right form.

Stacked tensor / array [n, *shape], list of n tensors / arrays, list of n state_dicts split into
parameters of different shapes (with a non-floating buffer between them). The data are the
quantised clouds of conftest, on which the Gram matrix is exact whatever the summation order,
so Krum's and Bulyan's choices cannot depend on the form.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import (BACKEND_IDS, BUFFER_KEY, NUMPY_DTYPES, RULE_CASE_IDS, TORCH_DTYPES, as_numpy64,
                      buffer_value, call_rule, combine_atol, quantised_cloud, rule_case, seed_of, to_float64,
                      to_form)
from fedsec.aggregation import reference as ref

N, D = 9, 1001
TORCH_FORMS = ("tensor", "tensor-list", "state_dict")
NUMPY_FORMS = ("ndarray", "ndarray-list", "ndarray-state_dict")
CPU_BACKENDS = ("native-cpu", "torch-cpu")


def _data(n=N, d=D):
    return quantised_cloud(seed_of("forms", n, d), n, d)


def _check_output_form(out, updates, form: str, dtype: str, device: str, shape, what: str):
    """The result has the form docs/api.md promises for ``form``."""
    if form.endswith("state_dict"):
        assert isinstance(out, dict), f"{what}: got {type(out).__name__}, expected a dict"
        assert list(out) == list(updates[0]), f"{what}: keys {list(out)}, expected {list(updates[0])}"
        for key, value in updates[0].items():
            if key == BUFFER_KEY:
                continue
            got = out[key]
            assert type(got) is type(value), f"{what}: {key} is {type(got).__name__}, expected {type(value).__name__}"
            assert tuple(got.shape) == tuple(value.shape), f"{what}: {key} has shape {tuple(got.shape)}"
            assert got.dtype == value.dtype, f"{what}: {key} has dtype {got.dtype}, expected {value.dtype}"
            if isinstance(got, torch.Tensor):
                assert got.device == value.device, f"{what}: {key} on {got.device}, expected {value.device}"
        return
    numpy = form.startswith("ndarray")
    kind = np.ndarray if numpy else torch.Tensor
    assert isinstance(out, kind), f"{what}: got {type(out).__name__}, expected {kind.__name__}"
    assert tuple(out.shape) == tuple(shape), f"{what}: shape {tuple(out.shape)}, expected {tuple(shape)}"
    want_dtype = np.dtype(NUMPY_DTYPES[dtype]) if numpy else TORCH_DTYPES[dtype]
    assert out.dtype == want_dtype, f"{what}: dtype {out.dtype}, expected {want_dtype}"
    if not numpy:
        assert out.device.type == device, f"{what}: on {out.device}, expected {device}"


def _compare(case, got, X, kwargs, dtype, what):
    want = case.reference(X, kwargs)
    if case.rule == "krum_scores":
        diam2 = ref.pairwise_sq_distances(X).max()
        atol = 1e-12 * diam2 * X.shape[0]  # quantised data: exact Gram, float64 arithmetic only
    else:
        atol = combine_atol(dtype, X.shape[0] + 1, float(np.abs(X).max())) + 1e-9
    err = np.abs(got - want)
    assert np.all(err <= atol), f"{what}: max |err| {err.max():.3g} > {atol:.3g} at {int(err.argmax())}"


def _run_form(case_id, form, dtype, backend, shape=None):
    X = _data()
    case = rule_case(case_id, N)
    kwargs = case.kwargs(X)
    updates = to_form(X, form, dtype, backend.device, shape=shape)
    out = call_rule(case, updates, kwargs, backend=backend.kind)
    what = f"{case_id} form={form} dtype={dtype} backend={backend.id} n={N} d={D}"
    if case.rule == "krum_scores":
        got = as_numpy64(out)
        assert got.shape == (N,), f"{what}: scores shape {got.shape}"
    else:
        _check_output_form(out, updates, form, dtype, backend.device, shape or (D,), what)
        got = to_float64(out, form, D)
    _compare(case, got, X, kwargs, dtype, what)
    return got


@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_forms_match_reference(case_id, form, backend):
    _run_form(case_id, form, "float32", backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
@pytest.mark.parametrize("form", NUMPY_FORMS)
def test_numpy_forms_match_reference(case_id, form, backend):
    _run_form(case_id, form, "float32", backend)


@pytest.mark.parametrize("case_id", ["mean", "median", "krum", "geometric_median", "bulyan"])
@pytest.mark.parametrize("form", ["tensor", "tensor-list"])
def test_multidimensional_updates_keep_their_shape(case_id, form, backend):
    # Each client's update is a [7, 143] matrix (7 * 143 = 1001): the result is [7, 143].
    _run_form(case_id, form, "float32", backend, shape=(7, 143))


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("case_id", ["mean", "median", "krum", "geometric_median", "bulyan"])
@pytest.mark.parametrize("form", ["ndarray", "ndarray-list"])
def test_multidimensional_numpy_updates_keep_their_shape(case_id, form, backend):
    _run_form(case_id, form, "float32", backend, shape=(11, 91))


# Values 4, 5, 3, 11, 1: median 4, mean 4.8, trimmed (k = 1) mean(3, 4, 5) = 4. Krum scores with
# f = 1 (2 nearest others, squared): 4 -> 1 + 1 = 2; 5 -> 1 + 4 = 5; 3 -> 1 + 4 = 5;
# 11 -> 36 + 49 = 85; 1 -> 4 + 9 = 13: client 0, value 4. Bulyan f = 0: everyone, 4.8.
SCALAR_CASES = [("median", {}, 4.0), ("mean", {}, 4.8), ("trimmed_mean", {"beta": 0.2}, 4.0), ("krum", {"f": 1}, 4.0),
                ("bulyan", {"f": 0}, 4.8), ("krum_scores", {"f": 1}, [2.0, 5.0, 5.0, 85.0, 13.0])]


@pytest.mark.parametrize("rule,kwargs,want", SCALAR_CASES, ids=[c[0] for c in SCALAR_CASES])
@pytest.mark.parametrize("form,backend", [("tensor", b) for b in BACKEND_IDS] + [("ndarray", b) for b in CPU_BACKENDS],
                         indirect=["backend"])
def test_scalar_updates(form, rule, kwargs, want, backend):
    """A stacked [n] input holds one scalar per client (shape ()): the result has shape ()."""
    values = [4.0, 5.0, 3.0, 11.0, 1.0]
    x = np.array(values) if form == "ndarray" else torch.tensor(values, dtype=torch.float64, device=backend.device)
    out = getattr(fedsec, rule)(x, **kwargs, backend=backend.kind)
    if rule == "krum_scores":
        np.testing.assert_allclose(as_numpy64(out), want, rtol=1e-14)
        return
    assert isinstance(out, np.ndarray if form == "ndarray" else torch.Tensor), type(out)
    assert tuple(out.shape) == (), f"{rule}: shape {tuple(out.shape)}"
    assert float(out) == pytest.approx(want, rel=1e-14), f"{rule}: {float(out)}, expected {want}"


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("form", NUMPY_FORMS)
def test_numpy_forms_keep_dtype(form, dtype, backend):
    for case_id in ("mean", "median", "krum"):
        _run_form(case_id, form, dtype, backend)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("form", TORCH_FORMS)
def test_torch_forms_keep_dtype(form, dtype, backend):
    for case_id in ("mean", "median", "krum"):
        _run_form(case_id, form, dtype, backend)


@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
def test_forms_agree_with_each_other(case_id, backend):
    """The three torch forms of one input give the same values (up to summation order)."""
    results = {form: _run_form(case_id, form, "float64", backend) for form in TORCH_FORMS}
    base = results["tensor"]
    for form, got in results.items():
        scale = max(1.0, float(np.abs(base).max()))
        assert np.allclose(got, base, rtol=0, atol=1e-9 * scale), (
            f"{case_id} backend={backend.id}: form {form} differs from the stacked tensor by "
            f"{np.abs(got - base).max():.3g}")


# --- state_dict specifics -------------------------------------------------------------------------

def _buffer(out):
    value = out[BUFFER_KEY]
    return int(value.item() if hasattr(value, "item") else value)


@pytest.mark.parametrize("form,backend", [("state_dict", b) for b in BACKEND_IDS]
                         + [("ndarray-state_dict", b) for b in CPU_BACKENDS], indirect=["backend"])
def test_state_dict_buffer_copied_from_first_client(form, backend):
    X = _data()
    updates = to_form(X, form, "float32", backend.device)
    out = fedsec.median(updates, backend=backend.kind)
    assert _buffer(out) == buffer_value(0)
    assert type(out[BUFFER_KEY]) is type(updates[0][BUFFER_KEY])
    assert out[BUFFER_KEY].dtype == updates[0][BUFFER_KEY].dtype
    if isinstance(out[BUFFER_KEY], torch.Tensor):
        assert out[BUFFER_KEY].device.type == backend.device


def test_state_dict_buffer_skips_zero_weight_client(backend):
    """Client 0 has weight 0: it does not contribute, so client 1's buffer is copied."""
    X = _data()
    updates = to_form(X, "state_dict", "float32", backend.device)
    weights = np.ones(N)
    weights[0] = 0.0
    out = fedsec.mean(updates, weights=weights, backend=backend.kind)
    assert _buffer(out) == buffer_value(1)
    np.testing.assert_allclose(to_float64(out, "state_dict", D), X[1:].mean(axis=0), atol=1e-5)


def test_state_dict_buffer_from_krum_choice(backend):
    """Krum (m=1) outputs one client's update: its buffer comes with it."""
    X = np.array(_data(), copy=True)
    X[:4] += 50.0  # clients 0..3 far away: the Krum choice is one of 4..8
    updates = to_form(X, "state_dict", "float32", backend.device)
    chosen = ref.krum_selection(X, 2, 1)
    assert chosen[0] >= 4
    out = fedsec.krum(updates, f=2, backend=backend.kind)
    assert _buffer(out) == buffer_value(chosen[0])
    np.testing.assert_array_equal(to_float64(out, "state_dict", D), X[chosen[0]])


def test_state_dict_buffer_skips_nonfinite_client(backend):
    X = np.array(_data(), copy=True)
    X[0, 5] = np.nan
    updates = to_form(X, "state_dict", "float32", backend.device)
    out = fedsec.mean(updates, backend=backend.kind)
    assert _buffer(out) == buffer_value(1)


def test_state_dict_distances_are_whole_model(backend):
    """Krum scores of a state_dict input equal those of the flattened model (the Gram matrix is
    summed over parameters, not computed per parameter)."""
    X = _data()
    scores = as_numpy64(fedsec.krum_scores(to_form(X, "state_dict", "float64", backend.device), f=2,
                                           backend=backend.kind))
    want = ref.krum_scores(X, 2)
    np.testing.assert_allclose(scores, want, rtol=1e-12)


def test_centered_clip_center_in_state_dict_form(backend):
    X = _data()
    center64 = np.round(X.mean(axis=0) * 16) / 16
    updates = to_form(X, "state_dict", "float64", backend.device)
    center = to_form(center64[None], "state_dict", "float64", backend.device)[0]
    out = fedsec.centered_clip(updates, tau=5.0, iters=2, center=center, backend=backend.kind)
    want = ref.centered_clip(X, 5.0, 2, center64)
    np.testing.assert_allclose(to_float64(out, "state_dict", D), want, rtol=0, atol=1e-9 * np.abs(X).max())


@pytest.mark.parametrize("form", ["tensor", "tensor-list"])
def test_centered_clip_center_in_tensor_form(form, backend):
    X = _data()
    center64 = np.round(X.mean(axis=0) * 16) / 16
    updates = to_form(X, form, "float32", backend.device)
    center = torch.tensor(center64, dtype=torch.float32, device=backend.device)
    out = fedsec.centered_clip(updates, tau=5.0, iters=2, center=center, backend=backend.kind)
    want = ref.centered_clip(X, 5.0, 2, center64)
    atol = combine_atol("float32", N + 1, float(np.abs(X).max()))
    np.testing.assert_allclose(to_float64(out, form), want, rtol=0, atol=atol)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("form", ["ndarray", "ndarray-list"])
def test_centered_clip_center_in_numpy_form(form, backend):
    X = _data()
    center64 = np.round(X.mean(axis=0) * 16) / 16
    updates = to_form(X, form, "float64", "cpu")
    out = fedsec.centered_clip(updates, tau=5.0, iters=2, center=center64.copy(), backend=backend.kind)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, ref.centered_clip(X, 5.0, 2, center64), rtol=0, atol=1e-9 * np.abs(X).max())


# --- inputs are read, never written ---------------------------------------------------------------

def _snapshot(updates):
    return copy.deepcopy(updates)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)) \
            and bool((a.isnan() == b.isnan()).all())
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
@pytest.mark.parametrize("form", ["tensor-list", "state_dict", "tensor"])
@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan-client"])
def test_inputs_not_mutated(case_id, form, with_nan, backend):
    X = np.array(_data(), copy=True)
    n = N
    if with_nan:
        X = np.vstack([X, X[:1]])  # one extra client, then poisoned: the rule still has n clients
        X[-1, 3] = np.nan
        n = N + 1
    case = rule_case(case_id, N)
    kwargs = case.kwargs(X[:N])
    if "weights" in kwargs and with_nan:
        kwargs["weights"] = np.append(kwargs["weights"], 1.0)
    updates = to_form(X, form, "float32", backend.device)
    before = _snapshot(updates)
    call_rule(case, updates, kwargs, backend=backend.kind)
    assert _same(updates, before), f"{case_id} form={form} backend={backend.id}: the input was modified"
    if isinstance(updates, list):
        assert len(updates) == n


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("case_id", RULE_CASE_IDS)
def test_numpy_list_not_mutated(case_id, backend):
    X = _data()
    case = rule_case(case_id, N)
    kwargs = case.kwargs(X)
    updates = to_form(X, "ndarray-list", "float32", "cpu")
    before = _snapshot(updates)
    call_rule(case, updates, kwargs, backend=backend.kind)
    assert _same(updates, before), f"{case_id} backend={backend.id}: the input list was modified"


@pytest.mark.parametrize("rule", ["mean", "median", "trimmed_mean", "geometric_median"])
@pytest.mark.parametrize("form", ["tensor", "tensor-list"])
def test_single_client_result_is_not_the_input_buffer(rule, form, backend):
    """With one client the value equals that client's update, but writing to the result must
    not change the client's update (the result is a new buffer)."""
    X = _data(1, 10)
    updates = to_form(X, form, "float32", backend.device)
    kwargs = {"beta": 0.1} if rule == "trimmed_mean" else {}
    out = getattr(fedsec, rule)(updates, **kwargs, backend=backend.kind)
    np.testing.assert_array_equal(to_float64(out, form), X[0])
    out.add_(1.0)
    first = updates[0]
    np.testing.assert_array_equal(first.cpu().double().numpy(), X[0].astype(np.float32))


# --- lists are read in place, never stacked ------------------------------------------------------

@pytest.mark.parametrize("rule,kwargs", [("mean", {}), ("median", {}), ("trimmed_mean", {"beta": 0.2}),
                                         ("krum", {"f": 2, "m": 3}), ("geometric_median", {}), ("bulyan", {"f": 1}),
                                         ("centered_clip", {"tau": 1.0})],
                         ids=["mean", "median", "trimmed_mean", "multi_krum", "geometric_median", "bulyan",
                              "centered_clip"])
def test_numpy_list_is_not_stacked(rule, kwargs):
    """docs/api.md: "Lists are never stacked into a copy". With 16 clients of 2^20 float32 values
    (64 MiB in all), the memory the call allocates through numpy (tracemalloc sees every numpy
    buffer) must stay far below one stacked copy: the output (4 MiB) plus scratch."""
    import tracemalloc

    n, d = 16, 1 << 20
    rng = np.random.default_rng(3)
    updates = [rng.standard_normal(d, dtype=np.float32) for _ in range(n)]
    stacked_bytes = n * d * 4
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        out = getattr(fedsec, rule)(updates, **kwargs, backend="native")
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert out.shape == (d,)
    assert peak < stacked_bytes / 4, f"{rule}: allocated {peak / 2**20:.1f} MiB for {stacked_bytes / 2**20:.0f} MiB of inputs"
