"""What the aggregation tests share.

- ``Backend`` / ``BACKEND_IDS``: the backends the ``backend`` fixture (tests/conftest.py) runs
  a test on: native-cpu (and its lower instruction sets), torch-cpu, native-cuda and
  torch-cuda. The CUDA ones skip per test when no device is usable, or fail when the
  environment sets FEDSEC_REQUIRE_CUDA=1 (so a GPU run cannot pass by skipping).
- ``to_form`` / ``to_float64``: a float64 [n, d] array into every accepted input form (stacked
  tensor or array, list of tensors or arrays, list of state_dicts split into parameters of
  different shapes) and a result back into a float64 vector of length d.
- Seeded data generators and the tolerance formulas shared by the test files.
"""
from __future__ import annotations

import functools
import math
import os
import re
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import fedsec
from fedsec.aggregation import reference as ref

# --- backends -------------------------------------------------------------------------------------

# native-cpu runs the best kernel table this processor runs; native-cpu-<isa> forces another
# (skipped where the processor lacks it), so every compiled instruction set meets the references.
LOWER_ISAS = ("avx2", "baseline")
BACKEND_IDS = ("native-cpu", *(f"native-cpu-{isa}" for isa in LOWER_ISAS), "torch-cpu",
               "native-cuda", "torch-cuda")


@dataclass(frozen=True)
class Backend:
    id: str       # "native-cpu", ...
    kind: str     # the `backend=` argument: "native" or "torch"
    device: str   # "cpu" or "cuda"

    @property
    def info_name(self) -> str:
        """What AggregationInfo.backend must say for this backend (docs/api.md)."""
        return "torch" if self.kind == "torch" else f"{self.device}-native"

    @property
    def is_cuda(self) -> bool:
        return self.device == "cuda"


def cuda_usable() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False"
    info = fedsec.build_info()
    if info.get("cuda_devices", 0) == 0:
        return False, f"fedsec.build_info() reports no usable CUDA device ({info.get('cuda_status')})"
    return True, ""


def require_cuda_or_skip() -> None:
    """Skip this test when no CUDA device is usable; fail instead under FEDSEC_REQUIRE_CUDA=1."""
    ok, why = cuda_usable()
    if ok:
        return
    if os.environ.get("FEDSEC_REQUIRE_CUDA") == "1":
        pytest.fail(f"FEDSEC_REQUIRE_CUDA=1 but {why}")
    pytest.skip(why)


# --- dtypes and tolerances ------------------------------------------------------------------------

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                "float32": torch.float32, "float64": torch.float64}
NUMPY_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}

# Machine epsilon (spacing of 1.0): rounding to nearest errs by at most eps / 2 relative.
EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float32": 2.0 ** -23, "float64": 2.0 ** -52}


def eps(dtype: str) -> float:
    return EPS[dtype]


def acc_eps(dtype: str) -> float:
    """Sums are accumulated in float32 at least (docs/api.md): float64 for float64 inputs."""
    return EPS["float64"] if dtype == "float64" else EPS["float32"]


def gram_rel(dtype: str, d: int) -> float:
    """Relative error allowed on a Gram entry: |dG_ij| <= gram_rel * ||y_i|| ||y_j||.

    For 16/32-bit inputs the products may be formed in float32 and summed in short float32 runs
    before the float64 accumulation (docs/design.md bounds this by 70 * 2^-24 = 35 eps32); we
    allow 64 eps32. For float64 inputs everything is float64: worst-case recursive summation of
    d products gives d * eps64 (plus a few roundings per term).
    """
    if dtype == "float64":
        return (d + 64) * EPS["float64"]
    return 64 * EPS["float32"]


def combine_atol(dtype: str, terms: int, scale: float) -> float:
    """Error bound of a convex combination sum_i c_i x_i (sum c_i = 1, c_i >= 0) of ``terms``
    values with |x_i| <= scale, accumulated in acc_eps(dtype) and rounded to ``dtype``:
    rounding the output costs eps/2 * scale, each product and each of the terms - 1 additions
    costs at most acc_eps * scale (standard recursive-summation bound). Factor 2 of slack."""
    return 2.0 * (eps(dtype) + (terms + 1) * acc_eps(dtype)) * scale


def distance_atol(dtype: str, d: int, diam2: float) -> float:
    """Error bound of a pairwise squared distance D_ij = G_ii + G_jj - 2 G_ij from a Gram matrix
    centered on a point of the cloud (||y_i||^2 <= diam2, the largest squared distance):
    |dD_ij| <= gram_rel * (||y_i||^2 + ||y_j||^2 + 2 ||y_i|| ||y_j||) <= 4 gram_rel diam2."""
    return 4.0 * gram_rel(dtype, d) * diam2


def seed_of(*parts) -> int:
    """A stable seed from a test's parameters (same data on every backend and run)."""
    return zlib.crc32(repr(parts).encode())


GRID_DTYPES = ("float32", "float64", "float16", "bfloat16")


def shape_grid(ns, ds, low_ns, low_ds):
    """(n, d, dtype) of a reference grid: the shapes ``ns`` x ``ds`` in float32 and float64,
    the smaller ``low_ns`` x ``low_ds`` in float16 and bfloat16."""
    for dtype in GRID_DTYPES:
        low = dtype in ("float16", "bfloat16")
        for n in (low_ns if low else ns):
            for d in (low_ds if low else ds):
                yield n, d, dtype


# --- data -----------------------------------------------------------------------------------------

def rounded(X64: np.ndarray, dtype: str) -> np.ndarray:
    """The float64 values of X64 after rounding to ``dtype`` (what the library really gets)."""
    return torch.from_numpy(np.array(X64, dtype=np.float64)).to(TORCH_DTYPES[dtype]).to(torch.float64).numpy()


def client_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct per-client spreads in [0.5, 1.5) in a random order: honest-looking clients whose
    Krum scores are well separated when d is large."""
    return 0.5 + rng.permutation(n) / max(n, 1)


@functools.lru_cache(maxsize=48)
def continuous_cloud(seed: int, n: int, d: int, dtype: str) -> np.ndarray:
    """x_i = c + s_i g_i (c a common model, g_i standard normal), rounded to ``dtype``; float64.
    Read-only: share it, never write to it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 0.5, d) + client_scales(rng, n)[:, None] * rng.standard_normal((n, d))
    X = rounded(X, dtype)
    X.setflags(write=False)
    return X


QUANTUM = 2.0 ** -4
QMAX = 63


@functools.lru_cache(maxsize=48)
def quantised_cloud(seed: int, n: int, d: int) -> np.ndarray:
    """Like continuous_cloud, but every value is k / 16 with |k| <= 63: exactly representable in
    bfloat16, float16, float32, and every centered product and partial Gram sum of every backend
    is an exact float32 (|y| <= 126/16, |y|^2 < 2^14 units of 2^-8, runs of 1024 products
    < 2^24 units). So the Gram matrix, the distances and hence Krum/Bulyan/medoid choices are
    exact and identical to the reference's, exact ties included, on every dtype and backend."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 0.5, d) + client_scales(rng, n)[:, None] * rng.standard_normal((n, d))
    X = np.clip(np.round(X / QUANTUM), -QMAX, QMAX) * QUANTUM
    X.setflags(write=False)
    return X


_DISTANCES: dict = {}


def cached_distances(key, X: np.ndarray) -> np.ndarray:
    """ref.pairwise_sq_distances(X), memoised by ``key`` (the reference is slow for n=64,
    d=65537 and several rules share a data set)."""
    if key not in _DISTANCES:
        if len(_DISTANCES) > 32:
            _DISTANCES.clear()
        _DISTANCES[key] = ref.pairwise_sq_distances(X)
    return _DISTANCES[key]


# --- input forms ----------------------------------------------------------------------------------

FORMS = ("tensor", "tensor-list", "state_dict", "ndarray", "ndarray-list", "ndarray-state_dict")
BUFFER_KEY = "bn.num_batches_tracked"


def state_dict_layout(d: int) -> list[tuple[str, tuple[int, ...] | None]]:
    """Keys and shapes splitting d coordinates into parameters of different shapes; the
    non-floating buffer (shape None) sits between them."""
    if d < 3:
        return [("fc.weight", (d,)), (BUFFER_KEY, None)]
    a, b = d // 2, d // 3
    c = d - a - b
    p = next((q for q in (2, 3, 5, 7) if a % q == 0), a)
    first = (p, a // p) if p != a else (a, 1)
    return [("conv.weight", first), (BUFFER_KEY, None), ("conv.bias", (b,)), ("fc.weight", (c, 1, 1))]


def is_numpy_form(form: str) -> bool:
    return form.startswith("ndarray")


def form_supported(form: str, dtype: str, device: str) -> bool:
    return not is_numpy_form(form) or (dtype in NUMPY_DTYPES and device == "cpu")


def buffer_value(client: int):
    """Client i's non-floating buffer holds 100 + i, so the copied client is identifiable."""
    return 100 + client


def to_form(X64: np.ndarray, form: str, dtype: str = "float32", device: str = "cpu", shape=None):
    """The [n, d] float64 array X64 as input form ``form`` in ``dtype`` on ``device``.

    ``shape`` reshapes each client's update for the tensor/array forms (default (d,))."""
    X64 = np.array(X64, dtype=np.float64)  # a writable copy
    n, d = X64.shape
    shape = (d,) if shape is None else tuple(shape)
    numpy = is_numpy_form(form)
    if numpy:
        assert device == "cpu" and dtype in NUMPY_DTYPES, (form, dtype, device)
        rows = [np.ascontiguousarray(X64[i].astype(NUMPY_DTYPES[dtype])) for i in range(n)]
    else:
        T = torch.from_numpy(X64).to(TORCH_DTYPES[dtype]).to(device)
        rows = [T[i].clone() for i in range(n)]
    if form in ("tensor", "ndarray"):
        stacked = np.stack(rows) if numpy else torch.stack(rows)
        return stacked.reshape((n,) + shape)
    if form in ("tensor-list", "ndarray-list"):
        return [r.reshape(shape) for r in rows]
    assert form in ("state_dict", "ndarray-state_dict"), form
    dicts = []
    for i, r in enumerate(rows):
        sd, start = {}, 0
        for key, pshape in state_dict_layout(d):
            if pshape is None:
                sd[key] = (np.array(buffer_value(i), dtype=np.int64) if numpy
                           else torch.tensor(buffer_value(i), dtype=torch.int64, device=device))
                continue
            size = math.prod(pshape)
            part = r[start:start + size].reshape(pshape)
            sd[key] = np.ascontiguousarray(part) if numpy else part.contiguous()
            start += size
        dicts.append(sd)
    return dicts


def to_float64(out, form: str, d: int | None = None) -> np.ndarray:
    """A result in the form ``form`` as a float64 numpy vector of length d."""
    if form in ("state_dict", "ndarray-state_dict"):
        assert isinstance(out, dict), f"a state_dict input must give a dict, got {type(out).__name__}"
        parts = [to_float64(out[key], "tensor") for key, pshape in state_dict_layout(d) if pshape is not None]
        return np.concatenate(parts)
    if isinstance(out, torch.Tensor):
        return out.detach().to("cpu", torch.float64).numpy().reshape(-1)
    return np.asarray(out, dtype=np.float64).reshape(-1)


def as_numpy64(values) -> np.ndarray:
    """Scores/coefficients as a float64 numpy array, whatever container they come in."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def describe(**fields) -> str:
    return ", ".join(f"{k}={v}" for k, v in fields.items())


# --- one call of every rule -----------------------------------------------------------------------

@dataclass(frozen=True)
class RuleCase:
    """One rule with parameters valid for n clients: ``kwargs(X)`` builds the library's
    arguments (beyond ``updates``) from the float64 data, ``reference(X, kwargs)`` the float64
    answer (scores for krum_scores)."""
    id: str
    rule: str
    make_kwargs: object
    make_reference: object
    combines: bool  # the output is a combination of whole updates (info.coefficients is set)

    def kwargs(self, X):
        return self.make_kwargs(X)

    def reference(self, X, kwargs):
        return self.make_reference(X, kwargs)


def _tau_for(X):
    D = ref.pairwise_sq_distances(X)
    nonzero = np.sqrt(D[D > 0])
    return 0.5 * float(np.median(nonzero)) if nonzero.size else 1.0


def rule_cases(n: int) -> list[RuleCase]:
    """Every rule once (twice for Krum), with parameters valid for n >= 7 clients."""
    assert n >= 7
    w = np.linspace(1.0, 2.0, n)
    return [
        RuleCase("mean", "mean", lambda X: {"weights": w}, lambda X, k: ref.mean(X, k["weights"]), True),
        RuleCase("median", "median", lambda X: {}, lambda X, k: ref.median(X), False),
        RuleCase("trimmed_mean", "trimmed_mean", lambda X: {"beta": 0.2},
                 lambda X, k: ref.trimmed_mean(X, 0.2), False),
        RuleCase("krum_scores", "krum_scores", lambda X: {"f": 1}, lambda X, k: ref.krum_scores(X, 1), False),
        RuleCase("krum", "krum", lambda X: {"f": 2}, lambda X, k: ref.krum(X, 2), True),
        RuleCase("multi_krum", "krum", lambda X: {"f": 1, "m": 3, "weights": w},
                 lambda X, k: ref.krum(X, 1, 3, k["weights"]), True),
        RuleCase("geometric_median", "geometric_median", lambda X: {},
                 lambda X, k: ref.geometric_median(X), True),
        RuleCase("bulyan", "bulyan", lambda X: {"f": 1}, lambda X, k: ref.bulyan(X, 1), False),
        RuleCase("centered_clip", "centered_clip", lambda X: {"tau": _tau_for(X), "iters": 2},
                 lambda X, k: ref.centered_clip(X, k["tau"], 2), True),
    ]


RULE_CASE_IDS = [c.id for c in rule_cases(7)]


def rule_case(case_id: str, n: int) -> RuleCase:
    return next(c for c in rule_cases(n) if c.id == case_id)


def call_rule(case: RuleCase, updates, kwargs, **extra):
    return getattr(fedsec, case.rule)(updates, **kwargs, **extra)


def bulyan_near_tie_alternative(S: np.ndarray, beta: int, dtype: str) -> np.ndarray:
    """Bulyan's second stage with the boundary near-tie resolved the other way.

    A backend decides "which of a and b is closer to the median m" by the sign of a + b - 2m in
    its accumulation precision, which can flip when |a - m| and |b - m| differ by less than
    ~4 eps * max|S| (every rounding of a + b and 2m errs by at most eps/2 of 2 max|S|). Per
    coordinate this returns the mean of the beta closest values with the last kept and the first
    dropped value swapped when their distances are that close; elsewhere the reference's value.
    """
    med = np.median(S, axis=0)
    dist = np.abs(S - med)
    order = np.lexsort((S, dist), axis=0)
    sorted_values = np.take_along_axis(S, order, axis=0)
    sorted_dist = np.take_along_axis(dist, order, axis=0)
    kept = sorted_values[:beta].sum(axis=0)
    if beta == len(S):
        return kept / beta
    near = (sorted_dist[beta] - sorted_dist[beta - 1]) <= 4 * acc_eps(dtype) * np.abs(S).max(axis=0)
    swapped = kept - sorted_values[beta - 1] + sorted_values[beta]
    return np.where(near, swapped, kept) / beta


def names(*patterns: str) -> str:
    """A regex (for pytest.raises(match=...)) that matches when every pattern occurs in the
    message, in any order (case-insensitive)."""
    return "(?is)" + "".join(f"(?=.*{p})" for p in patterns)


def number(value) -> str:
    """A regex for a number as a message may print it: 0.5, 0.50, -2, -2.0, 1e-06..."""
    v = float(value)
    if v == int(v) and abs(v) < 1e15:
        return rf"(?<![\d.]){int(v)}(\.0*)?(?![\d.])"
    return r"(?<![\d.])" + re.escape(repr(v)) + r"0*(?!\d)"
