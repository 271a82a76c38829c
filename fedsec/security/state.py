"""state_dict helpers shared by the attacks, the defenses and the federated optimizers.

- ``is_weight_param``: the entries a norm is taken over (floating, not BatchNorm's running
  statistics), as FedML's ``is_weight_param``;
- ``map_floats`` / ``map_weights``: a new state_dict with a function applied to its floating
  entries / its weight parameters, the other entries (e.g. ``num_batches_tracked``) as they are;
- ``diff_norm`` / ``state_norm``: ||w_l - w_g|| and ||w|| over the weight parameters, in
  float64, parameter by parameter (no flattened copy of the model).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from .base import StateDict, is_float

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def is_weight_param(key: str, value: Any) -> bool:
    """A trainable-looking floating entry (BatchNorm running statistics are not)."""
    return is_float(value) and not any(s in key for s in _RUNNING_STATS)


def map_floats(state: StateDict, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> StateDict:
    """``{k: fn(k, v)}`` for the floating entries, the same objects for the others; a new dict
    (the input is never modified)."""
    return {k: (fn(k, v) if is_float(v) else v) for k, v in state.items()}


def map_weights(state: StateDict, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> StateDict:
    """A new dict: ``fn`` applied to the weight parameters, the other entries as they are."""
    return {k: (fn(k, v) if is_weight_param(k, v) else v) for k, v in state.items()}


def diff_norm(local: StateDict, global_model: StateDict) -> float:
    """||local - global|| over the weight parameters (float64 accumulation)."""
    total = 0.0
    for key, value in local.items():
        if is_weight_param(key, value):
            diff = value.detach().to(torch.float64) - global_model[key].detach().to(
                device=value.device, dtype=torch.float64)
            total += float(torch.sum(diff * diff))
    return math.sqrt(total)


def state_norm(state: StateDict) -> float:
    """||state|| over the weight parameters (float64 accumulation)."""
    total = 0.0
    for key, value in state.items():
        if is_weight_param(key, value):
            v = value.detach().to(torch.float64)
            total += float(torch.sum(v * v))
    return math.sqrt(total)
