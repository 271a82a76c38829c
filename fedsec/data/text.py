"""Character-level text: vocabularies, encoding, and fixed-length samples cut from a corpus.

Samples are disjoint chunks of ``sequence_length + 1`` consecutive characters (chunk i starts at
i * (sequence_length + 1)); the input is a chunk's first ``sequence_length`` characters and the
label its last one (``target="last"``, LEAF's next-character task) or the chunk shifted by one
(``target="sequence"``, a causal language model's targets). Disjoint chunks keep the test
characters out of every training sample, which LEAF's stride-1 windows do not.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .dataset import DataError, Dataset
from .splits import held_out_split, members

# The 80 characters of LEAF's Shakespeare task (Caldas et al. 2018, models/utils/language_utils.py),
# in code-point order; a character outside them is read as LEAF_FALLBACK.
LEAF_VOCABULARY = ("\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]"
                   "abcdefghijklmnopqrstuvwxyz}")
LEAF_FALLBACK = " "
TARGETS = ("last", "sequence")


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def corpus_vocabulary(texts: Sequence[str]) -> str:
    """Every character the texts use, in code-point order."""
    return "".join(sorted(set().union(*map(set, texts))))


def encode(text: str, vocabulary: str, fallback: str | None = None) -> np.ndarray:
    """int64 token ids of ``text``: each character's index in ``vocabulary`` (sorted by code
    point). A character outside it becomes ``fallback``'s id; without a fallback it is an
    error."""
    table = _code_points(vocabulary)
    if np.any(np.diff(table.astype(np.int64)) <= 0):
        raise ValueError("vocabulary must list distinct characters in code-point order")
    codes = _code_points(text)
    ids = np.searchsorted(table, codes)
    unknown = table[np.minimum(ids, len(table) - 1)] != codes
    if unknown.any():
        if fallback is None:
            outside = sorted({char for char, bad in zip(text, unknown.tolist()) if bad})
            raise ValueError(f"characters {outside} are not in the vocabulary")
        ids[unknown] = vocabulary.index(fallback)
    return ids.astype(np.int64)


def decode(ids: np.ndarray | torch.Tensor, vocabulary: str) -> str:
    return "".join(vocabulary[i] for i in np.asarray(ids).tolist())


def check_text_options(target: str, sequence_length: int) -> None:
    if target not in TARGETS:
        raise ValueError(f"target={target!r} must be one of {TARGETS}")
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) \
            or sequence_length < 1:
        raise ValueError(f"sequence_length={sequence_length!r} must be an integer >= 1")


def chunks(ids: np.ndarray, sequence_length: int) -> np.ndarray:
    """The disjoint [n, sequence_length + 1] chunks of ``ids``; a shorter tail is dropped."""
    width = sequence_length + 1
    count = len(ids) // width
    return ids[:count * width].reshape(count, width)


def labelled(chunk: np.ndarray, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) of [n, L + 1] chunks: labels [n] (target "last") or [n, L]
    (target "sequence")."""
    labels = chunk[:, -1] if target == "last" else chunk[:, 1:]
    return chunk[:, :-1], labels


def chunk_dataset(name: str, *, train: np.ndarray, test: np.ndarray, target: str,
                  vocabulary: str, groups: tuple[np.ndarray, ...] | None,
                  source: str) -> Dataset:
    """A text Dataset from train and test [n, L + 1] chunks of token ids."""
    (train_x, train_y), (test_x, test_y) = labelled(train, target), labelled(test, target)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))

    return Dataset(name=name, kind="text", train_x=tensor(train_x), train_y=tensor(train_y),
                   test_x=tensor(test_x), test_y=tensor(test_y), num_classes=len(vocabulary),
                   input_shape=(train.shape[1] - 1,), groups=groups, vocabulary=vocabulary,
                   source=source)


def text_dataset(name: str, texts: Sequence[np.ndarray], *, vocabulary: str,
                 sequence_length: int, target: str, seed: int, source: str,
                 natural_groups: bool) -> Dataset:
    """Samples cut from each encoded text, split into train/test within each text (seeded);
    with ``natural_groups`` each text with samples is one group of the training set."""
    per_text = [chunks(ids, sequence_length) for ids in texts]
    all_chunks = np.concatenate([np.empty((0, sequence_length + 1), np.int64), *per_text])
    if len(all_chunks) == 0:
        raise DataError(f"{name}: {source} has no run of sequence_length + 1 = "
                        f"{sequence_length + 1} characters to make a sample from")
    text_of_chunk = np.repeat(np.arange(len(per_text)), [len(c) for c in per_text])
    train, test = held_out_split(text_of_chunk, seed)
    groups = tuple(members(text_of_chunk[train])) if natural_groups else None
    return chunk_dataset(name, train=all_chunks[train], test=all_chunks[test], target=target,
                         vocabulary=vocabulary, groups=groups, source=source)
