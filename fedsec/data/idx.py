"""``mnist`` and ``fashion_mnist`` from their IDX files.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number (two zero bytes,
a type code, the number of dimensions), each dimension as a big-endian uint32, then the values
in row-major order, big-endian. Fashion-MNIST (Xiao et al. 2017) uses the same files and names.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset, LoadRequest
from .images import from_uint8, image_dataset
from .paths import data_folder

# IDX type code -> element type (big-endian where it matters).
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
EXPECTS = (", ".join(name for pair in FILES.values() for name in pair)
           + " (each may be gzip-compressed, with .gz appended to its name)")
NUM_CLASSES = 10


def read_idx(path: Path) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzip-compressed when its name ends in .gz),
    in native byte order."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (magic {raw[:4].hex() or 'missing'}; "
                        f"expected 00 00, a type code in "
                        f"{{{', '.join(f'{code:02x}' for code in IDX_TYPES)}}}, the rank)")
    dtype, rank = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes cannot hold the {rank} dimensions its "
                        f"magic announces")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=rank, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, but its header (shape {shape}, "
                        f"{dtype.itemsize}-byte values) makes {expected}")
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # a writable copy in native order


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: no {name} (or {name}.gz); expected {EXPECTS}")


def _split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, Path]:
    images_path, labels_path = (_find(folder, name) for name in FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: {images.dtype} of shape {images.shape}; expected uint8 "
                        f"images [N, rows, columns]")
    if labels.ndim != 1 or labels.dtype != np.uint8 or len(labels) != len(images):
        raise DataError(f"{labels_path}: {labels.dtype} of shape {labels.shape}; expected "
                        f"{len(images)} uint8 labels, one per image of {images_path.name}")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} is outside 0..{NUM_CLASSES - 1}")
    return images[:, np.newaxis], labels, images_path


def load_idx_dataset(request: LoadRequest) -> Dataset:
    name = request.name
    folder = data_folder(request.data_dir, name, EXPECTS)
    train_images, train_labels, train_path = _split(folder, "train")
    test_images, test_labels, test_path = _split(folder, "test")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(f"{test_path}: images {test_images.shape[2:]} differ from the "
                        f"{train_images.shape[2:]} of {train_path}")
    return image_dataset(name, train=(from_uint8(train_images), train_labels),
                         test=(from_uint8(test_images), test_labels), num_classes=NUM_CLASSES,
                         source=f"{name} IDX files in {folder}")
