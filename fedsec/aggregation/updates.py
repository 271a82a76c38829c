"""Client updates in any accepted form, seen as blocks of per-client buffers.

A stacked ``[n, *shape]`` tensor or array, a list of n tensors or arrays, a list of n
state_dicts, or a list of n safetensors checkpoint paths all become a list of :class:`Block`
(one per parameter for state_dicts and checkpoints, one in all otherwise), each holding n views
of the clients' buffers. Nothing is stacked or copied; the aggregators write one output buffer
per block and :meth:`UpdateSet.assemble` puts the result back into the input's form (a
state_dict for checkpoints). A checkpoint's tensors are views of its memory-mapped file, made
when a pass asks for them (fedsec.aggregation.safetensors_file), so the clients' models are
never all in memory.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .safetensors_file import SafetensorsFile

FLOAT_TORCH_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
FLOAT_NUMPY_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))
_SUPPORTED = "float32, float64, float16 or bfloat16 (bfloat16 through torch only)"


@dataclass
class Block:
    """One parameter (or the whole update) of every client: n same-shape contiguous buffers."""

    key: str | None
    rows: Sequence[Any]
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class UpdateSet:
    n: int
    form: str  # "stacked", "list" or "state_dict" (also for safetensors checkpoints)
    library: str  # "torch" or "numpy"
    dtype: Any
    device: torch.device
    blocks: list[Block]
    # state_dict entries that are not floating point, per key: the n clients' values.
    passthrough: dict[str, list[Any]]
    keys: list[str]

    @property
    def dimension(self) -> int:
        return sum(b.size for b in self.blocks)

    def new_output(self, block: Block):
        if self.library == "torch":
            return torch.empty(block.shape, dtype=self.dtype, device=self.device)
        return np.empty(block.shape, dtype=self.dtype)

    def like(self, value: Any, name: str) -> "UpdateSet":
        """A one-client update set for a point given in the same form (e.g. ``center``)."""
        if self.form == "stacked" and isinstance(value, (torch.Tensor, np.ndarray)):
            value = value[None]
        else:
            value = [value]
        single = from_any(value, what=name)
        _check_same_layout(self, single, name)
        return single

    def assemble(self, outputs: list[Any], first_used: int):
        """Builds the result from one output per block (and passthrough entries)."""
        if self.form == "state_dict":
            by_key = {b.key: out for b, out in zip(self.blocks, outputs)}
            result = {}
            for key in self.keys:
                result[key] = by_key[key] if key in by_key else self.passthrough[key][first_used]
            return result
        return outputs[0]


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"torch.Tensor(dtype={x.dtype}, shape={tuple(x.shape)}, device={x.device})"
    if isinstance(x, np.ndarray):
        return f"numpy.ndarray(dtype={x.dtype}, shape={x.shape})"
    return type(x).__name__


def _is_float(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dtype in FLOAT_TORCH_DTYPES
    return isinstance(x, np.ndarray) and x.dtype in FLOAT_NUMPY_DTYPES


def _check_buffer(x: Any, where: str) -> None:
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{where} must be a torch.Tensor or numpy.ndarray; got {_describe(x)}")
    if not _is_float(x):
        raise TypeError(f"{where} has dtype {x.dtype}; expected {_SUPPORTED}")
    contiguous = x.is_contiguous() if isinstance(x, torch.Tensor) else x.flags.c_contiguous
    if not contiguous:
        raise ValueError(
            f"{where} is not contiguous (strides {tuple(x.stride() if isinstance(x, torch.Tensor) else x.strides)}); "
            "pass a contiguous buffer (.contiguous() / numpy.ascontiguousarray)"
        )


def _library(x: Any) -> str:
    return "torch" if isinstance(x, torch.Tensor) else "numpy"


def _device(x: Any) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def from_any(updates: Any, what: str = "updates") -> UpdateSet:
    """Normalises ``updates`` (see docs/api.md) into an :class:`UpdateSet`, validating it."""
    if isinstance(updates, (torch.Tensor, np.ndarray)):
        return _from_stacked(updates, what)
    if isinstance(updates, Mapping):
        raise TypeError(f"{what}: got one state_dict; pass a list of the n clients' state_dicts")
    if not isinstance(updates, Sequence) or isinstance(updates, (str, bytes)):
        raise TypeError(
            f"{what} must be a tensor/array [n, ...], a list of tensors/arrays, a list of "
            f"state_dicts or a list of safetensors file paths; got {_describe(updates)}"
        )
    if len(updates) == 0:
        raise ValueError(f"{what} is empty: need at least one client update")
    if all(isinstance(u, (str, os.PathLike)) for u in updates):
        return _from_safetensors([Path(u) for u in updates], what)
    if any(isinstance(u, (str, os.PathLike)) for u in updates):
        raise TypeError(f"{what} mixes safetensors file paths with other types")
    if all(isinstance(u, Mapping) for u in updates):
        return _from_state_dicts(list(updates), what)
    if any(isinstance(u, Mapping) for u in updates):
        raise TypeError(f"{what} mixes state_dicts with other types")
    return _from_list(list(updates), what)


def _from_stacked(x: Any, what: str) -> UpdateSet:
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{what} is empty: need an [n, ...] array with n >= 1; got shape {tuple(x.shape)}")
    _check_buffer(x, what)
    shape = tuple(int(s) for s in x.shape[1:])
    if int(np.prod(shape, dtype=np.int64)) == 0:
        raise ValueError(f"{what} has no coordinates (shape {tuple(x.shape)})")
    rows = [x[i, ...] for i in range(x.shape[0])]  # views, also when each row is 0-d
    return UpdateSet(int(x.shape[0]), "stacked", _library(x), x.dtype, _device(x),
                     [Block(None, rows, shape)], {}, [])


def _from_list(items: list[Any], what: str) -> UpdateSet:
    first = items[0]
    for i, u in enumerate(items):
        _check_buffer(u, f"{what}[{i}]")
        if _library(u) != _library(first):
            raise TypeError(f"{what} mixes torch tensors and numpy arrays (client 0 and client {i})")
        if u.dtype != first.dtype:
            raise TypeError(f"{what}[{i}] has dtype {u.dtype} but client 0 has {first.dtype}")
        if tuple(u.shape) != tuple(first.shape):
            raise ValueError(f"{what}[{i}] has shape {tuple(u.shape)} but client 0 has {tuple(first.shape)}")
        if _device(u) != _device(first):
            raise ValueError(f"{what}[{i}] is on {_device(u)} but client 0 is on {_device(first)}")
    shape = tuple(int(s) for s in first.shape)
    if int(np.prod(shape, dtype=np.int64)) == 0:
        raise ValueError(f"{what} has no coordinates (shape {shape})")
    return UpdateSet(len(items), "list", _library(first), first.dtype, _device(first),
                     [Block(None, items, shape)], {}, [])


def _from_state_dicts(dicts: list[Mapping], what: str) -> UpdateSet:
    keys = list(dicts[0].keys())
    for i, sd in enumerate(dicts[1:], start=1):
        if list(sd.keys()) != keys:
            missing = [k for k in keys if k not in sd]
            extra = [k for k in sd if k not in dicts[0]]
            raise ValueError(
                f"{what}[{i}] has different keys from client 0: missing {missing}, extra {extra}"
                if missing or extra else f"{what}[{i}] lists the keys in a different order from client 0"
            )
    blocks, passthrough = [], {}
    library = dtype = device = None
    for key in keys:
        values = [sd[key] for sd in dicts]
        if not _is_float(values[0]):
            if isinstance(values[0], (torch.Tensor, np.ndarray)) or np.isscalar(values[0]):
                passthrough[key] = values
                continue
            raise TypeError(f"{what}[0][{key!r}] is {_describe(values[0])}; expected a tensor or array")
        for i, v in enumerate(values):
            where = f"{what}[{i}][{key!r}]"
            _check_buffer(v, where)
            if tuple(v.shape) != tuple(values[0].shape):
                raise ValueError(f"{where} has shape {tuple(v.shape)} but client 0 has {tuple(values[0].shape)}")
            if library is None:
                library, dtype, device = _library(v), v.dtype, _device(v)
            if _library(v) != library or v.dtype != dtype:
                raise TypeError(f"{where} is {_describe(v)}; every float entry must be {library} {dtype}")
            if _device(v) != device:
                raise ValueError(f"{where} is on {_device(v)} but other entries are on {device}")
        if values[0].numel() if isinstance(values[0], torch.Tensor) else values[0].size:
            blocks.append(Block(key, values, tuple(int(s) for s in values[0].shape)))
        else:
            passthrough[key] = values
    if not blocks:
        raise ValueError(f"{what}: the state_dicts hold no floating-point parameters")
    return UpdateSet(len(dicts), "state_dict", library, dtype, device, blocks, passthrough, keys)


class _CheckpointRows(Sequence):
    """The rows of one block of checkpoints: client c's tensor ``key``, viewed when a pass asks
    for it (which releases the pages of the tensor that file served before)."""

    def __init__(self, files: list[SafetensorsFile], key: str):
        self.files, self.key = files, key

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, client: int) -> torch.Tensor:
        return self.files[client].view(self.key)


def _from_safetensors(paths: list[Path], what: str) -> UpdateSet:
    """Checkpoints as state_dicts: the same tensor names in every file (client 0's order),
    one block per floating tensor, the other entries read into memory as passthrough."""
    files = [SafetensorsFile(p, f"{what}[{i}]") for i, p in enumerate(paths)]
    keys = list(files[0].entries)
    for f in files[1:]:
        missing = [k for k in keys if k not in f.entries]
        extra = [k for k in f.entries if k not in files[0].entries]
        if missing or extra:
            raise ValueError(f"{f.where} has different tensors from {files[0].where}: "
                             f"missing {missing}, extra {extra}")
    blocks, passthrough, dtype = [], {}, None
    for key in keys:
        first = files[0].entries[key]
        for f in files[1:]:
            entry = f.entries[key]
            if entry.shape != first.shape or entry.dtype != first.dtype:
                raise ValueError(f"{f.where}[{key!r}] is {entry.dtype} {list(entry.shape)} but "
                                 f"{files[0].where} has {first.dtype} {list(first.shape)}")
        if first.dtype not in FLOAT_TORCH_DTYPES or first.begin == first.end:
            passthrough[key] = [f.copy(key) for f in files]
            continue
        dtype = dtype or first.dtype
        if first.dtype != dtype:
            raise TypeError(f"{files[0].where}[{key!r}] is {first.dtype}; every float entry "
                            f"must be torch {dtype}")
        blocks.append(Block(key, _CheckpointRows(files, key), first.shape))
    if not blocks:
        raise ValueError(f"{what}: the checkpoints hold no floating-point tensors")
    return UpdateSet(len(files), "state_dict", "torch", dtype, torch.device("cpu"), blocks,
                     passthrough, keys)


def _check_same_layout(reference: UpdateSet, other: UpdateSet, name: str) -> None:
    if other.library != reference.library or other.dtype != reference.dtype:
        raise TypeError(f"{name} is {other.library} {other.dtype}; the updates are "
                        f"{reference.library} {reference.dtype}")
    if other.device != reference.device:
        raise ValueError(f"{name} is on {other.device}; the updates are on {reference.device}")
    if [(b.key, b.shape) for b in other.blocks] != [(b.key, b.shape) for b in reference.blocks]:
        raise ValueError(f"{name} does not have the updates' shape/keys")
