"""Seeded subsets of a dataset: sizes, order, reproducibility, natural groups remapped."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsec.data import load_dataset
from fedsec.data.subset import subset


def test_subset_keeps_chosen_samples_in_order_and_is_seeded():
    data = load_dataset("digits")
    small = subset(data, 300, 50, seed=4)
    assert (small.num_train, small.num_test) == (300, 50)
    again = subset(data, 300, 50, seed=4)
    assert torch.equal(small.train_x, again.train_x) and torch.equal(small.test_y, again.test_y)
    assert not torch.equal(subset(data, 300, 50, seed=5).train_y, small.train_y)
    # every kept sample is an original one, in the original order
    flat = data.train_x.reshape(data.num_train, -1)
    rows = [int(torch.nonzero((flat == x.reshape(1, -1)).all(1))[0]) for x in small.train_x[:20]]
    assert rows == sorted(rows)
    assert subset(data) is data and subset(data, data.num_train) is data


def test_groups_are_remapped_to_the_subset():
    data = load_dataset("shakespeare_plays", sequence_length=20)
    small = subset(data, 2000, seed=1)
    assert small.groups is not None
    covered = np.sort(np.concatenate(small.groups))
    assert covered.min() >= 0 and covered.max() < 2000 and len(np.unique(covered)) == len(covered)
    # a sample keeps its role: its features are one of its original group's samples
    original = {tuple(data.train_x[i].tolist()): g for g, grp in enumerate(data.groups) for i in grp}
    for g, grp in enumerate(small.groups[:5]):
        roles = {original[tuple(small.train_x[i].tolist())] for i in grp}
        assert len(roles) == 1


@pytest.mark.parametrize("train,test,message", [
    (0, None, "train_size=0 must be an integer in 1..8000"),
    (9000, None, "train_size=9000 must be an integer in 1..8000"),
    (None, 2.5, "test_size=2.5 must be an integer in 1..2000"),
])
def test_bad_sizes(train, test, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        subset(load_dataset("digits"), train, test)
