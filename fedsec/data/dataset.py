"""The loaded form of every dataset, and the error raised for missing or malformed data."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

KINDS = ("image", "text")


class DataError(ValueError):
    """Data that cannot be loaded: a missing folder or file, or a file whose content is not the
    expected format. The message names the path and what was expected there."""


# eq=False: fields are tensors and arrays, whose == is elementwise; identity is the equality
# that makes sense here (and keeps instances hashable).
@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair of tensors plus what a federated run needs to know about them.

    Images: ``train_x`` float32 [N, C, H, W] in [0, 1], labels int64 [N].
    Text: ``train_x`` int64 [N, L] token ids (index into ``vocabulary``), labels int64 [N] (the
    next token after each window) or [N, L] (each window shifted by one, for a causal model).
    ``groups`` is the dataset's natural partition of the training set (LEAF users, speaking
    roles, files): disjoint int64 index arrays into ``train_x``; None when it has none.
    """

    name: str
    kind: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    groups: tuple[np.ndarray, ...] | None
    vocabulary: str | None
    source: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Dataset kind {self.kind!r} must be one of {KINDS}")
        feature_dtype = torch.float32 if self.kind == "image" else torch.int64
        for split, x, y in (("train", self.train_x, self.train_y),
                            ("test", self.test_x, self.test_y)):
            if x.dtype != feature_dtype or y.dtype != torch.int64:
                raise ValueError(f"{self.name} {split}: features {x.dtype} / labels {y.dtype}, "
                                 f"expected {feature_dtype} / torch.int64")
            if tuple(x.shape[1:]) != self.input_shape or len(y) != len(x):
                raise ValueError(f"{self.name} {split}: features {tuple(x.shape)} and labels "
                                 f"{tuple(y.shape)} do not fit input_shape {self.input_shape}")
        if (self.kind == "text") != (self.vocabulary is not None):
            raise ValueError(f"{self.name}: a vocabulary is required for text and only for text")
        if self.groups is not None:
            for group in self.groups:
                if group.dtype != np.int64 or len(group) == 0 or group.min() < 0 \
                        or group.max() >= len(self.train_x):
                    raise ValueError(f"{self.name}: every group must be a non-empty int64 index "
                                     f"array into the {len(self.train_x)} training samples")

    @property
    def num_train(self) -> int:
        return len(self.train_x)

    @property
    def num_test(self) -> int:
        return len(self.test_x)


@dataclass(frozen=True)
class LoadRequest:
    """What ``load_dataset`` was asked, checked, as each loader receives it. ``data_dir`` is set
    for every dataset that is not shipped with fedsec."""

    name: str
    data_dir: Path | None
    target: str
    sequence_length: int
    seed: int
