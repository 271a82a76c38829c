"""The image form shared by the image loaders: float32 [N, C, H, W] in [0, 1], int64 labels."""
from __future__ import annotations

import numpy as np
import torch

from .dataset import Dataset


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [N, C, H, W] pixels as float32 in [0, 1] (value / 255)."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32).div_(255.0)


def image_dataset(name: str, *, train: tuple[torch.Tensor, np.ndarray],
                  test: tuple[torch.Tensor, np.ndarray], num_classes: int, source: str,
                  groups: tuple[np.ndarray, ...] | None = None) -> Dataset:
    """A Dataset from (images, labels) pairs; labels of any integer dtype."""
    (train_x, train_y), (test_x, test_y) = train, test
    return Dataset(name=name, kind="image", train_x=train_x,
                   train_y=torch.from_numpy(train_y.astype(np.int64)), test_x=test_x,
                   test_y=torch.from_numpy(test_y.astype(np.int64)), num_classes=num_classes,
                   input_shape=tuple(train_x.shape[1:]), groups=groups, vocabulary=None,
                   source=source)
