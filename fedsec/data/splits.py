"""Train/test split of a corpus that ships without one, stratified by a per-sample group."""
from __future__ import annotations

import numpy as np

TEST_FRACTION = 0.2


def members(group_of_sample: np.ndarray) -> list[np.ndarray]:
    """int64 index arrays of the samples of each group, groups in increasing id order."""
    if len(group_of_sample) == 0:
        return []
    order = np.argsort(group_of_sample, kind="stable").astype(np.int64)
    bounds = np.flatnonzero(np.diff(group_of_sample[order])) + 1
    return np.split(order, bounds)


def held_out_split(group_of_sample: np.ndarray, seed: int,
                   test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: from each group of g samples, floor(test_fraction * g + 1/2)
    chosen at random (``seed``) go to test, so every group keeps at least one training sample
    and class proportions (when the groups are classes) are the same in both parts."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(group_of_sample), dtype=bool)
    for group in members(group_of_sample):
        num_test = int(np.floor(test_fraction * len(group) + 0.5))
        is_test[rng.permutation(group)[:num_test]] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)
