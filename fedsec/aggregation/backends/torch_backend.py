"""Pure-torch fallback of the three primitives, for any device and dtype torch supports.

Used when the native core is not built for the input's device. Coordinates are processed in
chunks so the temporary stack of the n clients stays near 32 MiB whatever d is.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import SelectOp
from .native import exact_gram_error

_CHUNK_ELEMENTS = 1 << 22


def _tensor(x) -> torch.Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _flat(x) -> torch.Tensor:
    return _tensor(x).reshape(-1)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class TorchBackend:
    name = "torch"

    def __init__(self, device: torch.device):
        self.device = device

    def _chunks(self, rows):
        d = _flat(rows[0]).numel()
        step = max(1, _CHUNK_ELEMENTS // len(rows))
        for start in range(0, d, step):
            yield start, min(d, start + step)

    def new_gram(self, n: int) -> torch.Tensor:
        return torch.zeros((n, n), dtype=torch.float64, device=self.device)

    def gram_result(self, acc: torch.Tensor) -> np.ndarray:
        return acc.cpu().numpy()

    def new_flags(self, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.bool, device=self.device)

    def flags_result(self, flags: torch.Tensor) -> np.ndarray:
        return flags.cpu().numpy()

    def gram_error(self, dtype, fast: bool, d: int) -> tuple[float, float]:
        return exact_gram_error(dtype, d)  # always float64

    def gram(self, rows, ref, acc: torch.Tensor, fast: bool, scale: float = 1.0) -> None:
        flat = [_flat(r) for r in rows]
        r = _flat(ref) if ref is not None else None
        for a, b in self._chunks(rows):
            y = torch.stack([x[a:b] for x in flat]).to(torch.float64)
            if scale != 1.0:  # before the difference, which could overflow
                y *= scale
            if r is not None:
                y.sub_(r[a:b].to(torch.float64), alpha=scale)
            acc += y @ y.T

    def combine(self, rows, coeffs, ref, ref_coeff, out, flags: torch.Tensor) -> None:
        flat = [_flat(r) for r in rows]
        acc_dtype = _accumulation_dtype(flat[0].dtype)
        if ref is not None:
            acc = _flat(ref).to(acc_dtype) * ref_coeff
        else:
            acc = torch.zeros(flat[0].numel(), dtype=acc_dtype, device=self.device)
        for i, (x, c) in enumerate(zip(flat, coeffs)):
            xa = x.to(acc_dtype)
            acc.add_(xa, alpha=float(c))
            if not bool(torch.isfinite(xa).all()):
                flags[i] = True
        _flat(out).copy_(acc)

    def select(self, rows, op, k, out, flags: torch.Tensor) -> None:
        self._select(rows, None, op, k, out, flags)

    def mixed_select(self, rows, mixing, op, k, out, flags: torch.Tensor) -> None:
        self._select(rows, np.asarray(mixing, dtype=np.float64), op, k, out, flags)

    def _select(self, rows, mixing, op, k, out, flags: torch.Tensor) -> None:
        flat = [_flat(r) for r in rows]
        acc_dtype = _accumulation_dtype(flat[0].dtype)
        n = len(flat) if mixing is None else mixing.shape[0]
        M = None if mixing is None else torch.from_numpy(mixing).to(acc_dtype).to(self.device)
        # Inputs scaled by 2^-p, 2^p >= max(n, 2) * (largest row sum of |M|, at least 1), mix
        # and reduce without overflow (as select_math.h's sorted_reduce_rescaled and the
        # mixed kernels).
        if mixing is None:
            p = max(1, (n - 1).bit_length())
        else:
            p = math.frexp(max(n, 2) * max(1.0, float(np.abs(mixing).sum(axis=1).max())))[1]
        target = _flat(out)
        for a, b in self._chunks(rows):
            stacked = torch.stack([x[a:b] for x in flat]).to(acc_dtype)
            flags |= ~torch.isfinite(stacked).all(dim=1)
            value = _reduce(stacked, M, n, op, k)
            # A mixed value or a sum that overflowed (or a non-finite input, flagged above):
            # redo those coordinates rescaled.
            redo = ~torch.isfinite(value)
            if bool(redo.any()):
                value[redo] = _reduce(stacked[:, redo] * 2.0**-p, M, n, op, k) * 2.0**p
            target[a:b] = value.to(target.dtype)


def _reduce(stacked: torch.Tensor, M: torch.Tensor | None, n: int, op: SelectOp, k: int):
    values = stacked if M is None else M @ stacked
    return _reduce_sorted(values.sort(dim=0).values, n, op, k)


def _median(s: torch.Tensor, n: int) -> torch.Tensor:
    h = n // 2
    return s[h] if n % 2 else (s[h - 1] + s[h]) * 0.5


def _reduce_sorted(s: torch.Tensor, n: int, op: SelectOp, k: int) -> torch.Tensor:
    if op == SelectOp.MEDIAN:
        return _median(s, n)
    if op == SelectOp.TRIMMED_MEAN:
        return s[k:n - k].sum(dim=0) / (n - 2 * k)
    # Closest to the median (k kept), as select_math.h: with K = n - k, the low end is dropped
    # at the i < K where s[i] + s[n-K+i] < 2 median; value i is kept iff it is not such a
    # dropped low value and, for i >= k, value i - k was one.
    # NaN where 2 median overflows (the decisions are then wrong), as there.
    K = n - k
    twice_median = 2 * _median(s, n)
    dropped_low = s[:K] + s[n - K:] < twice_median
    keep = torch.ones_like(s, dtype=torch.bool)
    keep[:K] &= ~dropped_low
    keep[k:] &= dropped_low
    kept = torch.where(keep, s, torch.zeros_like(s)).sum(dim=0)
    return kept / k - (twice_median - twice_median)
