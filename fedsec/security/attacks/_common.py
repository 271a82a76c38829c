"""Helpers shared by the built-in attacks.

- ``doc(default, text)``: a ``Params`` field with its documentation in ``metadata["doc"]``.
- ``choose_malicious(ctx, n, count)``: positions of this round's malicious clients, drawn from
  ``ctx.rng`` (seeded from the experiment's seed and the round: reproducible, new each round).
- ``map_floats``: a new state_dict with a function applied to its floating entries; the
  non-floating entries (e.g. ``num_batches_tracked``) are kept as they are.
- ``report_malicious``: the round's malicious client ids into ``ctx.metrics``.
- ``benign_stats``: per-coordinate mean and std (float64) of the benign clients' models.
- ``seeded_rng``: a generator seeded from an attack's own seed and some integers, for choices
  that must be the same whenever they are asked for (e.g. ``is_malicious`` across rounds).
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from ..base import ClientModel, RoundContext, StateDict
from ..base import client_id, doc, is_float  # noqa: F401  (re-exported)

MALICIOUS_KEY = "malicious_clients"






def map_floats(state: StateDict, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> StateDict:
    """``{k: fn(k, v)}`` for the floating entries, the same objects for the others; a new dict
    (the input is never modified)."""
    return {k: (fn(k, v) if is_float(v) else v) for k, v in state.items()}


def choose_malicious(ctx: RoundContext, n: int, count: int, what: str = "byzantine_client_num"
                     ) -> list[int]:
    """``count`` distinct positions in ``range(n)``, ascending, drawn from ``ctx.rng``."""
    if count > n:
        raise ValueError(f"{what}={count} malicious clients, but round {ctx.round_index} has only "
                         f"{n} clients")
    if count <= 0:
        return []
    return sorted(int(i) for i in ctx.rng.choice(n, size=count, replace=False))




def report_malicious(ctx: RoundContext, client_ids: Iterable[int]) -> None:
    """``ctx.metrics["malicious_clients"]``: the sorted ids of this round's malicious clients
    (merged with what is already there, so per-client hooks can report one at a time)."""
    known = set(ctx.metrics.get(MALICIOUS_KEY, []))
    known.update(int(c) for c in client_ids)
    ctx.metrics[MALICIOUS_KEY] = sorted(known)


def benign_stats(models: list[ClientModel], benign: list[int], key: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate mean and population std (ddof 0) of ``key`` over the benign models, in
    float64."""
    stacked = torch.stack([models[i][1][key].detach().to(torch.float64) for i in benign])
    return stacked.mean(0), stacked.std(0, unbiased=False)


def seeded_rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(int(p) & 0xFFFFFFFF for p in parts)])


def check_count(key: str, value: int, federation, *, leave_benign: int = 0) -> None:
    """``0 <= value <= client_num_per_round - leave_benign``."""
    high = federation.client_num_per_round - leave_benign
    if value < 0 or value > high:
        extra = f" - {leave_benign} (at least {leave_benign} benign)" if leave_benign else ""
        raise ValueError(f"{key}={value} is out of range: must be between 0 and "
                         f"client_num_per_round{extra} = {high}")


def check_positive(key: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{key}={value!r} must be a positive finite number")


def replace_malicious(models: list[ClientModel], bad: list[int],
                      poisoned: Callable[[str, torch.Tensor], torch.Tensor]) -> list[ClientModel]:
    """``models`` with every client at a position in ``bad`` sending the same crafted model:
    ``poisoned(key, value)`` is computed once per key and each such client gets its own copy."""
    cache: dict[str, torch.Tensor] = {}

    def copy_of(key: str, value: torch.Tensor) -> torch.Tensor:
        if key not in cache:
            cache[key] = poisoned(key, value)
        return cache[key].clone()

    out = list(models)
    for i in bad:
        out[i] = (models[i][0], map_floats(models[i][1], copy_of))
    return out
