"""Splitting a training set among federated clients: iid, label-Dirichlet (hetero), natural.

Every method returns one sorted int64 index array into ``dataset.train_x`` per client, every
client non-empty, the arrays disjoint and covering the training set (``natural``: the samples in
``dataset.groups``, which every loader here makes cover it), reproducible from ``seed``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .dataset import Dataset

METHODS = ("iid", "hetero", "natural")
# FedML's non_iid_partition_with_dirichlet_distribution redraws until every client has at least
# 10 samples, without bound; here at most MAX_DRAWS draws, then a deterministic fix-up.
MIN_CLIENT_SIZE = 10
MAX_DRAWS = 100


def partition(dataset: Dataset, num_clients: int, method: str = "iid", *, alpha: float = 0.5,
              seed: int = 0) -> list[np.ndarray]:
    """The training-set indices of each of ``num_clients`` clients.

    - ``"iid"``: a permutation (from ``seed``) cut into ``num_clients`` parts whose sizes
      differ by at most one.
    - ``"hetero"``: label skew from a Dirichlet(``alpha``) prior (Hsu et al. 2019, "Measuring
      the effects of non-identical data distribution"), as FedML's
      ``non_iid_partition_with_dirichlet_distribution`` (see ``dirichlet_partition``).
      Smaller ``alpha`` is more skewed. Needs one label per sample (not text with
      ``target="sequence"``).
    - ``"natural"``: the dataset's own ``groups`` (LEAF users, speaking roles, files). With more
      groups than clients, the groups are shuffled (``seed``) and dealt in ``num_clients``
      consecutive runs of near-equal group counts, each client taking the union of its run, so
      every sample is kept and no user is split; fewer groups than clients is an error.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"partition needs a fedsec.data.Dataset; got {type(dataset).__name__}")
    if isinstance(num_clients, bool) or not isinstance(num_clients, numbers.Integral):
        raise TypeError(f"num_clients={num_clients!r} must be an integer")
    if not 1 <= num_clients <= dataset.num_train:
        raise ValueError(f"num_clients={num_clients} must be in 1..{dataset.num_train} (the "
                         f"training samples of {dataset.name})")
    if method not in METHODS:
        raise ValueError(f"unknown partition method {method!r}; valid: {', '.join(METHODS)}")
    rng = np.random.default_rng(seed)
    if method == "iid":
        parts = np.array_split(rng.permutation(dataset.num_train), num_clients)
    elif method == "hetero":
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) \
                or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha={alpha!r} must be a finite number > 0")
        if dataset.train_y.ndim != 1:
            raise ValueError(f"hetero partitions by label, but {dataset.name}'s labels are "
                             f"sequences {tuple(dataset.train_y.shape)} (target='sequence'); "
                             f"use method 'iid' or 'natural'")
        parts = dirichlet_partition(dataset.train_y.cpu().numpy(), num_clients, float(alpha), rng)
    else:
        parts = _natural(dataset, num_clients, rng)
    return [np.sort(part).astype(np.int64) for part in parts]


def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float,
                        rng: np.random.Generator) -> list[np.ndarray]:
    """Label-Dirichlet split, as FedML (after Hsu et al. 2019 and Wang et al. 2020's balancing).

    One draw: for each class, proportions p ~ Dir(alpha) over the clients; clients already
    holding N / num_clients or more samples get no share of it (p_j = 0, the rest
    renormalised); the class's shuffled samples are cut at the cumulative proportions. A draw
    is accepted when every client has at least m = min(10, N // num_clients) samples. After
    MAX_DRAWS rejected draws the last one is repaired: while some client has fewer than m
    samples, the largest client gives it the samples it lacks (its last-assigned ones). This
    ends, because N >= m * num_clients leaves the largest client above m while any client is
    below it, and every client ends non-empty.
    """
    total = len(labels)
    min_size = min(MIN_CLIENT_SIZE, total // num_clients)
    by_class = [np.flatnonzero(labels == k) for k in np.unique(labels)]
    for _ in range(MAX_DRAWS):
        clients = _dirichlet_draw(by_class, num_clients, total, alpha, rng)
        if min(len(c) for c in clients) >= min_size:
            return [np.asarray(c, dtype=np.int64) for c in clients]
    return _top_up(clients, min_size)


def _dirichlet_draw(by_class: list[np.ndarray], num_clients: int, total: int, alpha: float,
                    rng: np.random.Generator) -> list[list[int]]:
    clients: list[list[int]] = [[] for _ in range(num_clients)]
    for samples in by_class:
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        has_room = np.array([len(c) < total / num_clients for c in clients])
        proportions = proportions * has_room
        if not proportions.sum() > 0:  # open clients drew 0 (or NaN: old numpy, tiny alpha)
            proportions = has_room.astype(float)
        cuts = (np.cumsum(proportions / proportions.sum()) * len(samples)).astype(int)[:-1]
        for client, share in zip(clients, np.split(rng.permutation(samples), cuts)):
            client.extend(share.tolist())
    return clients


def _top_up(clients: list[list[int]], min_size: int) -> list[np.ndarray]:
    clients = [list(c) for c in clients]
    sizes = np.array([len(c) for c in clients])
    while sizes.min() < min_size:
        needy, largest = int(np.argmin(sizes)), int(np.argmax(sizes))
        moved = min(min_size - sizes[needy], sizes[largest] - min_size)
        clients[needy].extend(clients[largest][-moved:])
        del clients[largest][-moved:]
        sizes[needy] += moved
        sizes[largest] -= moved
    return [np.asarray(c, dtype=np.int64) for c in clients]


def _natural(dataset: Dataset, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    if dataset.groups is None:
        raise ValueError(f"{dataset.name} has no natural groups (only LEAF data, "
                         f"shakespeare_plays and multi-file text corpora do); use method "
                         f"'iid' or 'hetero'")
    groups = dataset.groups
    if len(groups) < num_clients:
        raise ValueError(f"natural partition: {dataset.name} has {len(groups)} groups, fewer "
                         f"than num_clients={num_clients}")
    if len(groups) == num_clients:
        return list(groups)
    runs = np.array_split(rng.permutation(len(groups)), num_clients)
    return [np.concatenate([groups[g] for g in run]) for run in runs]
