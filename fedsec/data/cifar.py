"""``cifar10`` from the "CIFAR-10 python version" batches (Krizhevsky 2009,
https://www.cs.toronto.edu/~kriz/cifar.html).

Each batch is a pickled dict with ``b"data"``, a uint8 [n, 3072] array (per image: the 1024 red,
then green, then blue values of a 32x32 image, row-major), and ``b"labels"``, n ints in 0..9;
``batches.meta`` holds ``b"label_names"``. The batches are read with an unpickler that can only
rebuild numpy arrays, so a tampered file cannot run code.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import DataError, Dataset, LoadRequest
from .images import from_uint8, image_dataset
from .paths import data_folder, first_holding

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
SUBFOLDER = "cifar-10-batches-py"
EXPECTS = f"{', '.join(TRAIN_BATCHES)}, {TEST_BATCH}, {META} (or a {SUBFOLDER}/ folder of them)"
CHANNELS, SIDE = 3, 32

# What a pickled numpy array refers to, under numpy 1 and numpy 2 module names (and how
# Python 3 writes bytes at pickle protocol 2).
_ARRAY_GLOBALS = {
    ("_codecs", "encode"): codecs.encode,
    **{(module, "_reconstruct"): _multiarray._reconstruct
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _multiarray.scalar
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _numeric._frombuffer
       for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ARRAY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch "
                                         "holds only numpy arrays, lists and ints") from None


def _unpickle(path: Path) -> dict[str, Any]:
    """The pickled dict at ``path``, keys as str (the batches were pickled by Python 2, so
    their keys read as bytes)."""
    try:
        with path.open("rb") as file:
            content = _ArrayUnpickler(file, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(content, dict):
        raise DataError(f"{path}: holds a {type(content).__name__}, expected a dict")
    return {key.decode() if isinstance(key, bytes) else key: value
            for key, value in content.items()}


def _batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    content = _unpickle(path)
    missing = {"data", "labels"} - content.keys()
    if missing:
        raise DataError(f"{path}: no {sorted(missing)} entry; expected b'data' and b'labels'")
    data = content["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != CHANNELS * SIDE * SIDE:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(f"{path}: b'data' is {getattr(data, 'dtype', '')} {shape}; expected "
                        f"uint8 [n, {CHANNELS * SIDE * SIDE}]")
    labels = np.asarray(content["labels"])
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: b'labels' holds {labels.dtype} values; expected ints")
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {labels.size} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels span {labels.min()}..{labels.max()}; expected "
                        f"0..{num_classes - 1}")
    return data.reshape(-1, CHANNELS, SIDE, SIDE), labels.astype(np.int64)


def _num_classes(path: Path) -> int:
    names = _unpickle(path).get("label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: no b'label_names' list")
    return len(names)


def load_cifar10(request: LoadRequest) -> Dataset:
    folder = data_folder(request.data_dir, request.name, EXPECTS)
    folder = first_holding([folder, folder / SUBFOLDER], TRAIN_BATCHES[0]) or folder
    missing = [file for file in (*TRAIN_BATCHES, TEST_BATCH, META) if not (folder / file).is_file()]
    if missing:
        raise DataError(f"{folder}: no {', '.join(missing)}; expected {EXPECTS}")
    num_classes = _num_classes(folder / META)
    train = [_batch(folder / batch, num_classes) for batch in TRAIN_BATCHES]
    test_images, test_labels = _batch(folder / TEST_BATCH, num_classes)
    return image_dataset(request.name, train=(from_uint8(np.concatenate([x for x, _ in train])),
                                      np.concatenate([y for _, y in train])),
                         test=(from_uint8(test_images), test_labels), num_classes=num_classes,
                         source=f"CIFAR-10 python batches in {folder}")
