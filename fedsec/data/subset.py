"""A seeded random subset of a dataset's training and test sets, for CPU-scale experiments
(the paper's settings in minutes) and quick checks."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .dataset import Dataset


def subset(dataset: Dataset, train_size: int | None = None, test_size: int | None = None,
           seed: int = 0) -> Dataset:
    """``dataset`` with ``train_size`` training and ``test_size`` test samples drawn without
    replacement from ``seed`` (None keeps a split whole), in their original order. The natural
    groups keep the chosen samples of each group (a group left empty disappears)."""
    rng = np.random.default_rng([seed, 0x5B5E7])
    train = _choose("train_size", train_size, dataset.num_train, rng)
    test = _choose("test_size", test_size, dataset.num_test, rng)
    if train is None and test is None:
        return dataset
    changes = {}
    if train is not None:
        changes.update(train_x=dataset.train_x[train], train_y=dataset.train_y[train])
        if dataset.groups is not None:
            position = np.full(dataset.num_train, -1, dtype=np.int64)
            position[train.numpy()] = np.arange(len(train))
            kept = (position[g] for g in dataset.groups)
            changes["groups"] = tuple(g[g >= 0] for g in kept if (g >= 0).any())
    if test is not None:
        changes.update(test_x=dataset.test_x[test], test_y=dataset.test_y[test])
    return dataclasses.replace(dataset, **changes)


def _choose(key: str, size: int | None, available: int, rng: np.random.Generator
            ) -> torch.Tensor | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= available:
        raise ValueError(f"{key}={size!r} must be an integer in 1..{available} (the samples "
                         f"available)")
    if size == available:
        return None
    chosen = np.sort(rng.choice(available, size=size, replace=False))
    return torch.as_tensor(chosen, dtype=torch.long)
