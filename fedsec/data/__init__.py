"""Datasets for federated experiments: loaders of the real formats, two datasets shipped with
fedsec (``digits``, ``shakespeare_plays``) and partitioning among clients.

>>> from fedsec.data import load_dataset, partition
>>> data = load_dataset("digits")                       # no download, loads in well under 1 s
>>> clients = partition(data, 10, "hetero", alpha=0.5)  # index arrays into data.train_x

``DATASETS`` names every dataset with a one-line description; embedded/PROVENANCE.md says where
the shipped data comes from and under which terms.
"""
from __future__ import annotations

from .catalog import DATASETS, load_dataset
from .dataset import DataError, Dataset
from .partition import partition

__all__ = ["DATASETS", "DataError", "Dataset", "load_dataset", "partition"]
