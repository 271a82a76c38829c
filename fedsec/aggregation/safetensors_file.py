"""A client checkpoint in the safetensors format, read in place.

The format (https://github.com/huggingface/safetensors): 8 bytes, the little-endian length N of
a JSON header; N bytes of header, ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}``
plus an optional ``"__metadata__"``; then the tensors' bytes, row-major, little-endian, the
offsets counted from the end of the header.

The file is memory-mapped and each tensor is a view of its bytes: nothing is read until an
aggregation pass reads it. The rules read the clients block by block, so when a file is asked
for another tensor, the pages of the one it served before are handed back to the OS
(``madvise(MADV_DONTNEED)``): a pass keeps one tensor per client resident, whatever the size of
the checkpoints. The mapping is copy-on-write, so nothing can reach the file; the aggregators
never write their inputs, so a dropped page is always read back from the file unchanged.
"""
from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
_HEADER_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class Entry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # byte offsets in the mapped file
    end: int


class SafetensorsFile:
    """One checkpoint: its tensors' dtypes, shapes and places (``entries``, in the header's
    order), and views of them. ``where`` names the file in messages (e.g. "updates[2]")."""

    def __init__(self, path: Path, where: str):
        self.path, self.where = path, f"{where} ({path})"
        try:
            with open(path, "rb") as file:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: no file {str(path)!r}") from None
        except (OSError, ValueError) as exc:  # a directory, an empty file
            raise ValueError(f"{self.where}: cannot be memory-mapped ({exc})") from None
        self.entries = self._read_header()
        self._served: str | None = None  # the tensor whose pages may be resident

    def _read_header(self) -> dict[str, Entry]:
        size = len(self._map)
        if size < _HEADER_LENGTH.size:
            raise ValueError(f"{self.where}: not a safetensors file ({size} bytes)")
        (length,) = _HEADER_LENGTH.unpack_from(self._map, 0)
        start = _HEADER_LENGTH.size + length
        try:
            header = json.loads(self._map[_HEADER_LENGTH.size:start])
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.where}: not a safetensors file (its header is not JSON: "
                             f"{exc})") from None
        if start > size or not isinstance(header, dict):
            raise ValueError(f"{self.where}: not a safetensors file (header of {length} bytes "
                             f"in a file of {size})")
        entries = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            try:
                dtype = DTYPES[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                begin, end = (start + int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{self.where}: tensor {key!r} has a header entry {info!r}; "
                                 f"expected a dtype of {', '.join(DTYPES)}, a shape and "
                                 f"data_offsets") from None
            numel = 1
            for s in shape:
                numel *= s
            if not start <= begin <= end <= size or end - begin != numel * dtype.itemsize:
                raise ValueError(f"{self.where}: tensor {key!r} ({info['dtype']} "
                                 f"{list(shape)}) does not fit its data_offsets "
                                 f"{info['data_offsets']} in a file of {size} bytes")
            entries[key] = Entry(dtype, shape, begin, end)
        return entries

    def view(self, key: str) -> torch.Tensor:
        """Tensor ``key`` in place (no bytes read yet); the pages of the tensor viewed before
        are released."""
        if self._served is not None and self._served != key:
            self._release(self.entries[self._served])
        self._served = key
        entry = self.entries[key]
        count = (entry.end - entry.begin) // entry.dtype.itemsize
        return torch.frombuffer(self._map, dtype=entry.dtype, count=count,
                                offset=entry.begin).view(entry.shape)

    def copy(self, key: str) -> torch.Tensor:
        """Tensor ``key`` read into memory of its own (small entries kept as they are)."""
        entry = self.entries[key]
        if entry.begin == entry.end:
            return torch.empty(entry.shape, dtype=entry.dtype)
        return self.view(key).clone()

    def _release(self, entry: Entry) -> None:
        if not hasattr(mmap, "MADV_DONTNEED"):  # platforms without madvise keep the pages
            return
        start = entry.begin - entry.begin % mmap.PAGESIZE
        if entry.end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, entry.end - start)
