"""Backends implement the three streaming primitives; the rules in fedsec.aggregation.rules are
written once on top of them.

- ``gram(rows, ref, acc, fast, scale=1.0)``: acc += Y Y^T into float64 with Y = scale (X - r)
  (r = ref, or none when None; scale a power of two that keeps float64 products in range, 1
  with fast); ``fast`` allows float32 products. With ``(e, a) = gram_error(dtype, fast, d)``
  every entry is within ``e ||y_i|| ||y_j|| + a``; a backend without a float32 pass for dtype
  gives the same bound for both values of fast.
- ``combine(rows, coeffs, ref, ref_coeff, out, flags)``: out = ref_coeff * r + sum_k c_k x_k.
- ``select(rows, op, k, out, flags)``: per coordinate, sort and reduce (``SelectOp``).
- ``mixed_select(rows, mixing, op, k, out, flags)``: ``select`` of the n' values
  ``mixing @ x[c]`` per coordinate (mixing n' x n float64, a pre-aggregator's matrix), formed
  where they are sorted: the n' mixed rows are never stored. k counts mixed values.

``flags`` collects the rows that hold NaN or Inf. Accumulators and flags are backend objects
(device memory for CUDA) read back once with ``gram_result`` / ``flags_result``.
"""
from __future__ import annotations

import enum

import torch

from ..errors import CudaUnavailableError


class SelectOp(enum.Enum):
    """The reductions of ``select``, by the names of the extension's ``_core.SelectOp`` (which
    holds their codes; the native backend passes that member). Defined here too because the
    torch backend needs them where the extension does not import."""

    MEDIAN = enum.auto()
    TRIMMED_MEAN = enum.auto()  # k = values dropped at each end
    CLOSEST_MEDIAN = enum.auto()  # k = values kept, those closest to the median


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
