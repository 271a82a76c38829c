"""Backends implement the three streaming primitives; the rules in fedsec.aggregators are
written once on top of them.

- ``gram(rows, ref, acc, fast)``: acc += (X - r)(X - r)^T into float64 (r = ref, or none when
  None); ``fast`` allows float32 products, whose entries are then within
  ``gram_error(dtype, fast, d) * ||x_i - r|| ||x_j - r||``.
- ``combine(rows, coeffs, ref, ref_coeff, out, flags)``: out = ref_coeff * r + sum_k c_k x_k.
- ``select(rows, op, k, out, flags)``: per coordinate, sort and reduce (``SelectOp``).

``flags`` collects the rows that hold NaN or Inf. Accumulators and flags are backend objects
(device memory for CUDA) read back once with ``gram_result`` / ``flags_result``.
"""
from __future__ import annotations

import enum

import torch

from ..errors import CudaUnavailableError


class SelectOp(enum.IntEnum):
    MEDIAN = 0
    TRIMMED_MEAN = 1  # k = values dropped at each end
    CLOSEST_MEDIAN = 2  # k = values kept, those closest to the median


BACKEND_CHOICES = ("auto", "native", "torch")


def pick_backend(choice: str, device: torch.device):
    """The backend object for ``choice`` ("auto", "native" or "torch") on ``device``."""
    from . import native
    from .torch_backend import TorchBackend

    if choice not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {BACKEND_CHOICES}; got {choice!r}")
    if choice == "torch":
        return TorchBackend(device)
    reason = native.unavailable_reason(device)
    if reason is None:
        return native.NativeBackend(device)
    if choice == "native":
        if device.type == "cuda":
            raise CudaUnavailableError(f"native CUDA aggregation unavailable: {reason}")
        raise RuntimeError(f"native aggregation unavailable on {device}: {reason}")
    return TorchBackend(device)
