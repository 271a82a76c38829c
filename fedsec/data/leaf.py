"""``femnist`` and ``shakespeare`` from LEAF's JSON files (Caldas et al. 2018, "LEAF: A Benchmark
for Federated Settings", https://github.com/TalwalkarLab/leaf).

LEAF writes ``train/*.json`` and ``test/*.json``, each ``{"users": [...], "num_samples": [...],
"user_data": {user: {"x": [...], "y": [...]}}}``. FEMNIST: x = 784 floats in [0, 1] (a 28x28
image, row-major), y = a class in 0..61 (10 digits, 26 upper- and 26 lower-case letters).
Shakespeare: x = an 80-character string, y = the character after it. ``groups`` are the users
of the training files, in file-name then ``users`` order.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import DataError, Dataset, LoadRequest
from .images import image_dataset
from .paths import data_folder, first_holding
from .text import LEAF_FALLBACK, LEAF_VOCABULARY, chunk_dataset, encode

SPLITS = ("train", "test")
EXPECTS = "LEAF's train/*.json and test/*.json (or a data/ folder holding them)"
FEMNIST_CLASSES = 62
FEMNIST_SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class _UserSamples:
    path: Path
    user: str
    x: list[Any]
    y: list[Any]


def _json_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no .json files; expected {EXPECTS}")
    return files


def _users(path: Path) -> Iterator[_UserSamples]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable as JSON ({exc})") from exc
    if not isinstance(content, dict) or not {"users", "num_samples", "user_data"} <= content.keys():
        raise DataError(f"{path}: expected an object with 'users', 'num_samples' and "
                        f"'user_data'")
    users, counts, user_data = content["users"], content["num_samples"], content["user_data"]
    if not (isinstance(users, list) and isinstance(counts, list) and isinstance(user_data, dict)):
        raise DataError(f"{path}: 'users' and 'num_samples' must be lists, 'user_data' an object")
    if len(users) != len(counts):
        raise DataError(f"{path}: {len(users)} users but {len(counts)} num_samples")
    for user, count in zip(users, counts):
        samples = user_data.get(user)
        if not isinstance(samples, dict) or not isinstance(samples.get("x"), list) \
                or not isinstance(samples.get("y"), list):
            raise DataError(f"{path}: user_data[{user!r}] must be an object with lists 'x', 'y'")
        if not len(samples["x"]) == len(samples["y"]) == count:
            raise DataError(f"{path}: user {user!r} has {len(samples['x'])} x and "
                            f"{len(samples['y'])} y, num_samples says {count}")
        yield _UserSamples(path, user, samples["x"], samples["y"])


def _split(folder: Path, convert: Callable[[_UserSamples], tuple[np.ndarray, ...]]
           ) -> tuple[list[np.ndarray], tuple[np.ndarray, ...]]:
    """The arrays ``convert`` makes of each user's samples, concatenated over the users of one
    split, and each user's index range in them."""
    parts, groups, start = [], [], 0
    for path in _json_files(folder):
        for samples in _users(path):
            if not samples.x:
                continue
            parts.append(convert(samples))
            groups.append(np.arange(start, start + len(samples.x), dtype=np.int64))
            start += len(samples.x)
    if not parts:
        raise DataError(f"{folder}: the .json files hold no samples")
    return [np.concatenate(column) for column in zip(*parts)], tuple(groups)


def _femnist_user(samples: _UserSamples) -> tuple[np.ndarray, np.ndarray]:
    where = f"{samples.path}: user {samples.user!r}"
    try:
        x = np.asarray(samples.x, dtype=np.float32)
        y = np.asarray(samples.y)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: x must be lists of 784 numbers ({exc})") from exc
    if x.shape != (len(samples.x), int(np.prod(FEMNIST_SHAPE))):
        raise DataError(f"{where}: x has shape {x.shape}; expected [{len(samples.x)}, 784]")
    if not (np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1):
        raise DataError(f"{where}: pixel values span {x.min()}..{x.max()}; expected [0, 1]")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= FEMNIST_CLASSES:
        raise DataError(f"{where}: y must be classes in 0..{FEMNIST_CLASSES - 1}")
    return x.reshape(-1, *FEMNIST_SHAPE), y.astype(np.int64)


def _shakespeare_user(sequence_length: int) -> Callable[[_UserSamples], tuple[np.ndarray]]:
    def convert(samples: _UserSamples) -> tuple[np.ndarray]:
        where = f"{samples.path}: user {samples.user!r}"
        if not all(isinstance(x, str) and len(x) == sequence_length for x in samples.x):
            raise DataError(f"{where}: x must be strings of sequence_length = {sequence_length} "
                            f"characters (LEAF writes 80)")
        if not all(isinstance(y, str) and len(y) == 1 for y in samples.y):
            raise DataError(f"{where}: y must be single characters")
        # Each sample as one chunk of sequence_length + 1 ids: the window, then the next one.
        ids = encode("".join(x + y for x, y in zip(samples.x, samples.y)), LEAF_VOCABULARY,
                     LEAF_FALLBACK)
        return (ids.reshape(len(samples.x), sequence_length + 1),)
    return convert


def _leaf_folder(request: LoadRequest) -> Path:
    folder = data_folder(request.data_dir, request.name, EXPECTS)
    found = first_holding([folder, folder / "data"], "train")
    if found is None or not all((found / split).is_dir() for split in SPLITS):
        raise DataError(f"{folder}: no train/ and test/ folders; expected {EXPECTS}")
    return found


def load_femnist(request: LoadRequest) -> Dataset:
    folder = _leaf_folder(request)
    ([train_x, train_y], groups), ([test_x, test_y], _) = (
        _split(folder / split, _femnist_user) for split in SPLITS)
    return image_dataset(request.name, train=(torch.from_numpy(train_x), train_y),
                         test=(torch.from_numpy(test_x), test_y), num_classes=FEMNIST_CLASSES,
                         groups=groups, source=f"LEAF FEMNIST JSON in {folder}")


def load_leaf_shakespeare(request: LoadRequest) -> Dataset:
    folder = _leaf_folder(request)
    convert = _shakespeare_user(request.sequence_length)
    ([train], groups), ([test], _) = (_split(folder / split, convert) for split in SPLITS)
    return chunk_dataset(request.name, train=train, test=test, target=request.target,
                         vocabulary=LEAF_VOCABULARY, groups=groups,
                         source=f"LEAF Shakespeare JSON in {folder}")
