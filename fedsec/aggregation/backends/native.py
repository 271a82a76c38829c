"""The native C++/CUDA core (fedsec._core) behind the backend interface."""
from __future__ import annotations

import os

import numpy as np
import torch

from ... import threads

try:
    from ... import _core
    IMPORT_ERROR: str | None = None
except ImportError as exc:  # a source checkout without a build: the torch backend still works
    _core = None
    IMPORT_ERROR = f"fedsec._core could not be imported ({exc})"

ISA_ENV = "FEDSEC_ISA"


def set_cpu_isa(name: str, where: str = "isa") -> None:
    """Run the CPU kernels compiled for ``name`` (baseline, avx2, avx512), one this processor
    runs; ``where`` names the setting in the error."""
    if _core is None:
        raise RuntimeError(IMPORT_ERROR)
    available = _core.cpu_isas()
    if name not in available:
        raise ValueError(f"{where}={name!r} is not an instruction set this processor runs with "
                         f"this build; available: {', '.join(available)} (best first)")
    _core.set_cpu_isa(name)


if _core is not None and os.environ.get(ISA_ENV) is not None:
    set_cpu_isa(os.environ[ISA_ENV], ISA_ENV)

_threads_chosen = False


def ensure_threads() -> None:
    """Give the CPU kernels fedsec's thread budget (fedsec/threads.py) when they first need a
    thread count, unless ``set_num_threads`` chose one: a bad FEDSEC_NUM_THREADS is then a
    ValueError at the first aggregation, not a failed ``import fedsec``."""
    if not _threads_chosen:
        set_num_threads(threads.thread_budget())


def set_num_threads(count: int) -> None:
    global _threads_chosen
    _core.set_num_threads(count)  # ValueError below 1
    _threads_chosen = True

def dtype_name(dtype) -> str:
    """"float32", "float64", ... for a torch or numpy dtype: the member of the extension's
    DType enum (csrc/bindings.cpp defines the codes, once)."""
    return dtype.name if isinstance(dtype, np.dtype) else str(dtype).removeprefix("torch.")


def unavailable_reason(device: torch.device) -> str | None:
    """None when the native core can run on ``device``, else why not."""
    if _core is None:
        return IMPORT_ERROR
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"no native kernels for device type {device.type!r}"
    if not _core.cuda_built():
        return _core.cuda_device_status()
    if _core.cuda_device_count() == 0:
        return f"no usable CUDA device ({_core.cuda_device_status()})"
    return None


def _address(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.data_ptr()
    return x.__array_interface__["data"][0]


def _dtype(x):
    return _core.DType.__members__[dtype_name(x.dtype)]


class NativeBackend:
    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.name = "cuda-native" if self.cuda else "cpu-native"
        self._device_index = device.index if device.index is not None else (
            torch.cuda.current_device() if self.cuda else -1)

    def _launch(self, fn, *args):
        if not self.cuda:
            ensure_threads()
            return fn(*args, device=-1, stream=0)
        with torch.cuda.device(self._device_index):
            stream = torch.cuda.current_stream().cuda_stream
            return fn(*args, device=self._device_index, stream=stream)

    def new_gram(self, n: int):
        if self.cuda:
            return torch.zeros((n, n), dtype=torch.float64, device=self.device)
        return np.zeros((n, n), dtype=np.float64)

    def gram_result(self, acc) -> np.ndarray:
        return acc.cpu().numpy() if self.cuda else acc

    def new_flags(self, n: int):
        if self.cuda:
            return torch.zeros(n, dtype=torch.uint8, device=self.device)
        return np.zeros(n, dtype=np.uint8)

    def flags_result(self, flags) -> np.ndarray:
        return (flags.cpu().numpy() if self.cuda else flags).astype(bool)

    def gram_error(self, dtype, fast: bool, d: int) -> tuple[float, float]:
        """Bound (e, a) of a pass's Gram entries: |error of G_ij| <= e ||y_i|| ||y_j|| + a.
        Without a float32 pass for ``dtype`` (CUDA, float64), fast=True gives the exact bound."""
        exact = exact_gram_error(dtype, d)
        name = dtype_name(dtype)
        if self.cuda or not fast or name == "float64":
            return exact
        # A float32 product that underflows errs by up to 2^-150 absolute, not relative; the
        # differences of float16 values are >= 2^-24, their products cannot underflow.
        return _core.gram_fast_error() + exact[0], (d * 2.0**-149 if name != "float16" else 0.0)

    def gram(self, rows, ref, acc, fast: bool, scale: float = 1.0) -> None:
        self._launch(_core.gram, [_address(r) for r in rows], _address(ref) if ref is not None else 0,
                     _numel(rows[0]), _dtype(rows[0]), bool(fast), float(scale), _address(acc))

    def combine(self, rows, coeffs, ref, ref_coeff, out, flags) -> None:
        self._launch(_core.combine, [_address(r) for r in rows], [float(c) for c in coeffs],
                     _address(ref) if ref is not None else 0, float(ref_coeff), _numel(rows[0]),
                     _dtype(rows[0]), _address(out), _address(flags))

    def select(self, rows, op, k, out, flags) -> None:
        self._launch(_core.coordinate_select, [_address(r) for r in rows], _numel(rows[0]),
                     _dtype(rows[0]), _core.SelectOp.__members__[op.name], int(k), _address(out),
                     _address(flags))

    def mixed_select(self, rows, mixing, op, k, out, flags) -> None:
        mixing = np.asarray(mixing, dtype=np.float64)
        self._launch(_core.mixed_select, [_address(r) for r in rows], mixing.reshape(-1).tolist(),
                     int(mixing.shape[0]), _numel(rows[0]), _dtype(rows[0]),
                     _core.SelectOp.__members__[op.name], int(k), _address(out), _address(flags))


def exact_gram_error(dtype, d: int) -> tuple[float, float]:
    """A float64 sum of d products in any order is within (d + 1) * 2^-53 of exact, relative to
    the sum of the products' magnitudes (<= ||y_i|| ||y_j|| by Cauchy-Schwarz), plus 2^-1074 for
    each product that underflows. Only float64 inputs' products can: the differences of
    narrower values are 0 or >= 2^-149."""
    return (d + 1) * 2.0**-53, (d * 2.0**-1074 if dtype_name(dtype) == "float64" else 0.0)


def _numel(x) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else x.size
