"""Helpers shared by the built-in defenses.

- ``doc(default, text)``: a ``Params`` field with its documentation in ``metadata["doc"]``.
- ``states`` / ``counts``: the state_dicts and sample counts of a round's W_l.
- ``is_weight_param``: the entries a norm is taken over (floating, not BatchNorm's running
  statistics), as FedML's ``is_weight_param``.
- ``diff_norm``: ||w_l - w_g|| over the weight parameters, in float64, parameter by parameter
  (no flattened copy of the model).
- ``report_excluded`` / ``report_aggregation``: what a defense dropped, as client ids from
  ``ctx.client_ids``, into ``ctx.metrics``.
- ``check_*``: ``validate`` helpers whose messages name the key, the value and what is allowed.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from ..base import ClientModel, Federation, RoundContext, StateDict
from ..base import client_id, doc, is_float  # noqa: F401  (re-exported)

EXCLUDED_KEY = "excluded_clients"
WEIGHTS_KEY = "client_weights"
_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")






def is_weight_param(key: str, value: Any) -> bool:
    """A trainable-looking floating entry (BatchNorm running statistics are not)."""
    return is_float(value) and not any(s in key for s in _RUNNING_STATS)


def states(models: list[ClientModel]) -> list[StateDict]:
    return [state for _, state in models]


def counts(models: list[ClientModel]) -> list[float]:
    return [float(count) for count, _ in models]


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
    total = 0.0
    for key, value in state.items():
        if is_weight_param(key, value):
            v = value.detach().to(torch.float64)
            total += float(torch.sum(v * v))
    return math.sqrt(total)


def map_weights(state: StateDict, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> StateDict:
    """A new dict: ``fn`` applied to the weight parameters, the other entries as they are."""
    return {k: (fn(k, v) if is_weight_param(k, v) else v) for k, v in state.items()}


def clip_towards(local: StateDict, global_model: StateDict, bound: float) -> tuple[StateDict, float]:
    """w_g + (w_l - w_g) / max(1, ||w_l - w_g|| / bound); returns the model and the norm."""
    norm = diff_norm(local, global_model)
    scale = 1.0 / max(1.0, norm / bound) if math.isfinite(norm) else 1.0
    if scale == 1.0:
        return local, norm

    def clip(k: str, v: torch.Tensor) -> torch.Tensor:
        g = global_model[k].to(v)
        return g + (v - g) * scale

    return map_weights(local, clip), norm




def report_excluded(ctx: RoundContext, positions: Iterable[int], reason: str | None = None) -> None:
    """Merge the clients at ``positions`` into ``ctx.metrics["excluded_clients"]`` (sorted ids),
    and the reason into ``ctx.metrics["exclusion_reasons"]`` ({id: reason})."""
    ids = [client_id(ctx, p) for p in positions]
    known = set(ctx.metrics.get(EXCLUDED_KEY, []))
    known.update(ids)
    ctx.metrics[EXCLUDED_KEY] = sorted(known)
    if reason is not None:
        reasons = ctx.metrics.setdefault("exclusion_reasons", {})
        for i in ids:
            reasons.setdefault(i, reason)


def report_aggregation(ctx: RoundContext, info: Any, n: int, rule: str) -> None:
    """Report the clients an aggregation of ``n`` models did not use (``info.used``), with the
    core's reason where it gave one (e.g. non-finite values)."""
    used = set(info.used)
    for position in range(n):
        if position not in used:
            reason = info.excluded.get(position, f"not selected by {rule}")
            report_excluded(ctx, [position], reason)


def report_weights(ctx: RoundContext, weights: Iterable[float]) -> None:
    ctx.metrics[WEIGHTS_KEY] = {client_id(ctx, i): float(w) for i, w in enumerate(weights)}


# --- validation -----------------------------------------------------------------------------------

def check_int_range(key: str, value: int, low: int, high: int, what_high: str = "") -> None:
    if value < low or value > high:
        extra = f" ({what_high})" if what_high else ""
        raise ValueError(f"{key}={value} is out of range: must be between {low} and {high}{extra}")


def check_byzantine(key: str, f: int, federation: Federation, need: str,
                    ok: Callable[[int, int], bool]) -> None:
    """``f >= 0`` and ``ok(n, f)`` for n = client_num_per_round; ``need`` states the rule."""
    n = federation.client_num_per_round
    if f < 0:
        raise ValueError(f"{key}={f} must be >= 0")
    if not ok(n, f):
        raise ValueError(f"{key}={f} is too large for client_num_per_round={n}: {need}")


def add_gaussian_noise(state: StateDict, sigma: float, ctx: RoundContext) -> StateDict:
    """A new dict: N(0, sigma^2) noise from ``ctx.rng`` added to every weight parameter."""
    if sigma == 0:
        return dict(state)

    def noisy(k: str, v: torch.Tensor) -> torch.Tensor:
        noise = torch.as_tensor(ctx.rng.standard_normal(tuple(v.shape)) * sigma)
        return v + noise.to(dtype=v.dtype, device=v.device)

    return map_weights(state, noisy)
