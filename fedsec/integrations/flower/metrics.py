"""A round's fedsec metrics (``RoundContext.metrics``) as Flower ``MetricRecord`` values.

A ``MetricRecord`` holds ints, floats and lists of one of them. fedsec's entries map onto them:

- a number stays a number (a bool becomes 0 or 1);
- a list of client ids (``excluded_clients``, ``malicious_clients``) stays a list of ints;
- a per-client mapping ``{client id: number}`` (``krum_scores``, ``client_weights``) becomes
  a list of floats in the order of the round's ``fedsec-clients`` list, NaN for a client the
  mapping does not name;
- a mapping of named numbers (``detection``: precision, recall, fpr and the counts) becomes
  one entry per name, ``fedsec-detection-recall``, an undefined ratio (None) NaN;
- anything else (e.g. ``exclusion_reasons``, text per client) has no MetricRecord form and is
  left out; the strategy's ``round_metrics`` keeps every entry.

Keys become ``fedsec-`` + the key with hyphens, after Flower's own ``num-examples`` /
``server-round`` spelling: ``excluded_clients`` -> ``fedsec-excluded-clients``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

PREFIX = "fedsec-"
CLIENTS_KEY = PREFIX + "clients"


def metric_name(key: str) -> str:
    return PREFIX + key.replace("_", "-")


def to_metric_values(metrics: Mapping[str, Any], client_ids: Sequence[int]
                     ) -> dict[str, int | float | list[int] | list[float]]:
    """The entries of ``metrics`` that have a MetricRecord form, under their Flower names, plus
    ``fedsec-clients`` (the round's client ids, the order of every per-client list)."""
    out: dict[str, int | float | list[int] | list[float]] = {
        CLIENTS_KEY: [int(c) for c in client_ids]}
    for key, value in metrics.items():
        if _is_named_numbers(value):
            for name, number in value.items():
                out[metric_name(f"{key}_{name}")] = math.nan if number is None else number
            continue
        converted = _metric_value(value, client_ids)
        if converted is not None:
            out[metric_name(key)] = converted
    return out


def _is_named_numbers(value: Any) -> bool:
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(k, str) for k in value)
            and all(v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))
                    for v in value.values()))


def _metric_value(value: Any, client_ids: Sequence[int]):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            return [int(v) for v in value]
        if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
            return [float(v) for v in value]
        return None
    if isinstance(value, Mapping) and _is_per_client(value, client_ids):
        return [float(value.get(c, math.nan)) for c in client_ids]
    return None


def _is_per_client(value: Mapping, client_ids: Sequence[int]) -> bool:
    known = set(int(c) for c in client_ids)
    return all(isinstance(k, numbers.Integral) and int(k) in known
               and isinstance(v, numbers.Real) and not isinstance(v, bool)
               for k, v in value.items())
