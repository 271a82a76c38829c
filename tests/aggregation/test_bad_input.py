"""Every bad input of docs/api.md "Errors" raises the stated type, and the message names the
offending value (checked with pytest.raises(match=...) on the key numbers and names)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fedsec
from support.aggregation import names, number, require_cuda_or_skip, to_form

N, D = 5, 12


def _X(n=N, d=D, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def _t(n=N, d=D, dtype=torch.float32, device="cpu"):
    return torch.tensor(_X(n, d), dtype=dtype, device=device)


ALL_RULES = {
    "mean": {}, "median": {}, "trimmed_mean": {"beta": 0.2}, "krum_scores": {"f": 1}, "krum": {"f": 1},
    "geometric_median": {}, "bulyan": {"f": 0}, "centered_clip": {"tau": 1.0},
}


def _call(rule, updates, on=None, **kwargs):
    """Calls ``rule`` with valid parameters (overridden by kwargs), on the Backend ``on``."""
    args = dict(ALL_RULES[rule], **kwargs)
    if on is not None:
        args["backend"] = on.kind
    return getattr(fedsec, rule)(updates, **args)


# --- TypeError: unsupported types and dtypes ------------------------------------------------------

@pytest.mark.parametrize("rule", list(ALL_RULES))
@pytest.mark.parametrize("updates", [
    pytest.param("not updates", id="str"),
    pytest.param(3.0, id="float"),
    pytest.param(None, id="None"),
    pytest.param({"w": torch.zeros(3)}, id="one-state_dict-not-in-a-list"),
    pytest.param([[1.0, 2.0], [3.0, 4.0]], id="list-of-lists"),
    pytest.param([1.0, 2.0, 3.0], id="list-of-floats"),
])
def test_unsupported_container_is_type_error(rule, updates):
    with pytest.raises(TypeError):
        _call(rule, updates)


@pytest.mark.parametrize("rule", list(ALL_RULES))
@pytest.mark.parametrize("dtype,name", [
    (torch.int32, "int32"), (torch.int64, "int64"), (torch.uint8, "uint8"), (torch.bool, "bool"),
    (torch.complex64, "complex64"),
])
def test_unsupported_torch_dtype(rule, dtype, name, backend):
    updates = torch.ones((N, D), dtype=dtype, device=backend.device)
    with pytest.raises(TypeError, match=name):
        _call(rule, updates, backend)


@pytest.mark.parametrize("dtype,name", [(np.int64, "int64"), (np.int8, "int8"), (np.bool_, "bool"),
                                        (np.complex128, "complex128")])
@pytest.mark.parametrize("form", ["ndarray", "ndarray-list"])
def test_unsupported_numpy_dtype(dtype, name, form):
    X = np.ones((N, D), dtype=dtype)
    updates = X if form == "ndarray" else list(X)
    with pytest.raises(TypeError, match=name):
        fedsec.median(updates)


def test_mixed_dtypes_in_a_list(backend):
    updates = [torch.zeros(D, device=backend.device) for _ in range(N)]
    updates[3] = updates[3].double()
    with pytest.raises(TypeError, match=names("float64", "float32")):
        fedsec.mean(updates, backend=backend.kind)


def test_mixed_dtypes_in_state_dicts(backend):
    dicts = to_form(_X(), "state_dict", "float32", backend.device)
    dicts[2]["conv.bias"] = dicts[2]["conv.bias"].double()
    with pytest.raises(TypeError, match=names("float64", "float32")):
        fedsec.median(dicts, backend=backend.kind)


def test_mixed_numpy_dtypes():
    updates = [np.zeros(D, dtype=np.float32) for _ in range(N)]
    updates[1] = updates[1].astype(np.float16)
    with pytest.raises(TypeError, match=names("float16", "float32")):
        fedsec.krum(updates, f=1)


# --- ValueError: empty, shapes, keys, contiguity, devices -----------------------------------------

@pytest.mark.parametrize("rule", list(ALL_RULES))
@pytest.mark.parametrize("updates", [
    pytest.param([], id="empty-list"),
    pytest.param(torch.zeros((0, 4)), id="empty-tensor"),
    pytest.param(np.zeros((0, 4), dtype=np.float32), id="empty-array"),
])
def test_empty_input(rule, updates):
    with pytest.raises(ValueError, match=r"(?i)empty|\b0\b"):
        _call(rule, updates)


@pytest.mark.parametrize("rule", list(ALL_RULES))
def test_mismatched_shapes_name_the_client(rule, backend):
    updates = [torch.zeros(D, device=backend.device) for _ in range(N)]
    updates[3] = torch.zeros(D + 1, device=backend.device)
    with pytest.raises(ValueError, match=names(r"\b3\b", str(D + 1))):
        _call(rule, updates, backend)


def test_mismatched_numpy_shapes_name_the_client():
    updates = [np.zeros((3, 4), dtype=np.float32) for _ in range(N)]
    updates[2] = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\b2\b"):
        fedsec.median(updates)


@pytest.mark.parametrize("rule", list(ALL_RULES))
def test_state_dict_missing_key_names_client_and_key(rule, backend):
    dicts = to_form(_X(), "state_dict", "float32", backend.device)
    del dicts[3]["fc.weight"]
    with pytest.raises(ValueError, match=names(r"\b3\b", r"fc\.weight")):
        _call(rule, dicts, backend)


def test_state_dict_extra_key_names_client_and_key(backend):
    dicts = to_form(_X(), "state_dict", "float32", backend.device)
    dicts[4]["head.extra"] = torch.zeros(2, device=backend.device)
    with pytest.raises(ValueError, match=names(r"\b4\b", r"head\.extra")):
        fedsec.mean(dicts, backend=backend.kind)


def test_state_dict_shape_mismatch_names_client_and_key(backend):
    dicts = to_form(_X(), "state_dict", "float32", backend.device)
    dicts[1]["conv.bias"] = torch.zeros(dicts[1]["conv.bias"].numel() + 2, device=backend.device)
    with pytest.raises(ValueError, match=names(r"\b1\b", r"conv\.bias")):
        fedsec.krum(dicts, f=1, backend=backend.kind)


@pytest.mark.parametrize("rule", list(ALL_RULES))
def test_non_contiguous_stacked_tensor(rule, backend):
    updates = torch.zeros((D, 2 * N), device=backend.device)[:, ::2].T  # [N, D], strided
    assert not updates.is_contiguous()
    with pytest.raises(ValueError, match=r"(?i)contiguous"):
        _call(rule, updates, backend)


def test_non_contiguous_tensor_in_a_list(backend):
    updates = [torch.zeros(D, device=backend.device) for _ in range(N)]
    updates[2] = torch.zeros((D, 2), device=backend.device)[:, 0]
    assert not updates[2].is_contiguous()
    with pytest.raises(ValueError, match=r"(?i)contiguous"):
        fedsec.median(updates, backend=backend.kind)


def test_non_contiguous_state_dict_entry_names_client_and_key(backend):
    dicts = to_form(_X(), "state_dict", "float32", backend.device)
    weight = dicts[2]["conv.weight"]
    dicts[2]["conv.weight"] = weight.T.contiguous().T  # same values and shape, transposed strides
    assert not dicts[2]["conv.weight"].is_contiguous()
    with pytest.raises(ValueError, match=names("contiguous", r"\b2\b", r"conv\.weight")):
        fedsec.mean(dicts, backend=backend.kind)


def test_non_contiguous_numpy():
    X = np.zeros((D, N), dtype=np.float32).T
    with pytest.raises(ValueError, match=r"(?i)contiguous"):
        fedsec.mean(X)
    with pytest.raises(ValueError, match=r"(?i)contiguous"):
        fedsec.mean([np.zeros((D, 2), dtype=np.float32)[:, 1] for _ in range(N)])


def test_tensors_on_different_devices():
    require_cuda_or_skip()
    updates = [torch.zeros(D) for _ in range(N)]
    updates[3] = updates[3].cuda()
    with pytest.raises(ValueError, match=r"(?i)cuda|device"):
        fedsec.mean(updates)


# --- ValueError: parameters out of range ----------------------------------------------------------

@pytest.mark.parametrize("rule", ["krum_scores", "krum", "bulyan"])
@pytest.mark.parametrize("f", [-1, -3])
def test_negative_f(rule, f, backend):
    with pytest.raises(ValueError, match=names(r"\bf\b", number(f))):
        getattr(fedsec, rule)(_t(9, device=backend.device), f=f, backend=backend.kind)


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7, 1.0])
def test_beta_out_of_range(beta, backend):
    with pytest.raises(ValueError, match=names("beta", number(beta))):
        fedsec.trimmed_mean(_t(device=backend.device), beta=beta, backend=backend.kind)


@pytest.mark.parametrize("m", [0, -1, N + 1])
def test_m_out_of_range(m, backend):
    with pytest.raises(ValueError, match=names(r"\bm\b", number(m))):
        fedsec.krum(_t(device=backend.device), f=1, m=m, backend=backend.kind)


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_tau_not_positive(tau, backend):
    with pytest.raises(ValueError, match=names("tau", number(tau))):
        fedsec.centered_clip(_t(device=backend.device), tau=tau, backend=backend.kind)


@pytest.mark.parametrize("nu", [0.0, -0.5])
def test_nu_not_positive(nu, backend):
    with pytest.raises(ValueError, match=names(r"\bnu\b", number(nu))):
        fedsec.geometric_median(_t(device=backend.device), nu=nu, backend=backend.kind)


WEIGHTED = [("mean", {}), ("krum", {"f": 1, "m": 3}), ("geometric_median", {})]


@pytest.mark.parametrize("rule,kwargs", WEIGHTED, ids=[r for r, _ in WEIGHTED])
@pytest.mark.parametrize("length", [N - 1, N + 2])
def test_weights_of_wrong_length(rule, kwargs, length, backend):
    with pytest.raises(ValueError, match=names("weight", number(length))):
        getattr(fedsec, rule)(_t(device=backend.device), weights=np.ones(length), **kwargs, backend=backend.kind)


@pytest.mark.parametrize("rule,kwargs", WEIGHTED, ids=[r for r, _ in WEIGHTED])
def test_negative_weights(rule, kwargs, backend):
    weights = [1.0, 1.0, -2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=names("weight", number(-2))):
        getattr(fedsec, rule)(_t(device=backend.device), weights=weights, **kwargs, backend=backend.kind)


@pytest.mark.parametrize("rule,kwargs", WEIGHTED, ids=[r for r, _ in WEIGHTED])
def test_all_zero_weights(rule, kwargs, backend):
    with pytest.raises(ValueError, match=r"(?i)weight"):
        getattr(fedsec, rule)(_t(device=backend.device), weights=np.zeros(N), **kwargs, backend=backend.kind)


@pytest.mark.parametrize("rule,n,f", [
    ("krum", 4, 1),         # needs n > 2f + 2 = 4
    ("krum", 2, 0),         # needs n > 2
    ("krum_scores", 6, 2),  # needs n > 6
    ("bulyan", 6, 1),       # needs n >= 4f + 3 = 7
    ("bulyan", 10, 2),      # needs n >= 11
])
def test_too_few_clients(rule, n, f, backend):
    with pytest.raises(ValueError, match=names(rf"n\s*=\s*{n}\b", rf"f\s*=\s*{f}\b")):
        getattr(fedsec, rule)(_t(n, device=backend.device), f=f, backend=backend.kind)


def test_krum_limits_are_exact(backend):
    """The smallest valid n is accepted: n = 2f + 3 for Krum, n = 4f + 3 for Bulyan."""
    fedsec.krum(_t(7, device=backend.device), f=2, backend=backend.kind)
    fedsec.bulyan(_t(7, device=backend.device), f=1, backend=backend.kind)
    fedsec.krum(_t(5, device=backend.device), f=1, m=5, backend=backend.kind)


@pytest.mark.parametrize("rule", list(ALL_RULES))
def test_unknown_on_nonfinite(rule):
    # docs/api.md allows "exclude" or "raise"; anything else is a parameter out of range
    with pytest.raises(ValueError, match="ignore"):
        _call(rule, _t(9), on_nonfinite="ignore")


@pytest.mark.parametrize("rule", list(ALL_RULES))
def test_unknown_backend(rule):
    with pytest.raises(ValueError, match="gpu"):
        _call(rule, _t(9), backend="gpu")


# --- CUDA availability ----------------------------------------------------------------------------

def test_cuda_unavailable_error_type():
    assert issubclass(fedsec.CudaUnavailableError, RuntimeError)


def test_build_info_is_consistent():
    info = fedsec.build_info()
    for key in ("version", "native", "cuda_built", "cuda_devices", "cuda_status", "cpu_isa", "num_threads"):
        assert key in info, f"build_info() lacks {key!r}: {info}"
    assert isinstance(info["cuda_devices"], int) and info["cuda_devices"] >= 0
    if not info["cuda_built"]:
        assert info["cuda_devices"] == 0
    if info["cuda_devices"] == 0:
        assert isinstance(info["cuda_status"], str) and info["cuda_status"], "cuda_status must say why"


def test_native_cuda_without_usable_device_raises():
    """A CUDA tensor with backend="native" when fedsec has no usable device: CudaUnavailableError.
    (Needs torch to see a GPU that fedsec cannot use; on a machine where fedsec can use it,
    the native CUDA path must work instead.)"""
    if not torch.cuda.is_available():
        require_cuda_or_skip()  # skips (fails under FEDSEC_REQUIRE_CUDA=1): no CUDA tensor can be made
    x = torch.ones((3, 4), device="cuda")
    if fedsec.build_info()["cuda_devices"] == 0:
        with pytest.raises(fedsec.CudaUnavailableError):
            fedsec.mean(x, backend="native")
    else:
        out = fedsec.mean(x, backend="native")
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), torch.ones(4))
