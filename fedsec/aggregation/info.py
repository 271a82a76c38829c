"""What an aggregation did: which clients it used, excluded, scored and how."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AggregationInfo:
    """Returned beside the value when an aggregator is called with ``return_info=True``.

    ``coefficients`` is set for rules whose output is a combination of whole updates:
    the output equals ``sum_i coefficients[i] * x_i`` plus ``(1 - sum(coefficients))`` times the
    reference point (``center`` for centered clipping; zero remainder for the others).
    """

    rule: str
    n: int
    used: tuple[int, ...]
    excluded: dict[int, str] = field(default_factory=dict)
    coefficients: np.ndarray | None = None
    scores: np.ndarray | None = None
    iterations: int | None = None
    backend: str = ""
