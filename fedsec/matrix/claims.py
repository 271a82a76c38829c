"""Published findings checked on a matrix's numbers: for each claim, whether it holds here,
and whether that agrees with what its source found."""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from .config import Claim, MatrixConfig
from .results import CellResult

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    left: float
    right: float      # the compared value, margin included
    holds_here: bool | None  # None: a side has no value (e.g. no seed produced the metric)

    @property
    def agrees(self) -> bool | None:
        return None if self.holds_here is None else self.holds_here == self.claim.expected_holds


def check_claims(matrix: MatrixConfig, results: list[CellResult]) -> list[Verdict]:
    by_cell = {r.cell.choice: r for r in results}
    verdicts = []
    for claim in matrix.claims:
        left = by_cell[matrix.cell(claim.left).choice].mean(claim.metric)
        base = (by_cell[matrix.cell(claim.right).choice].mean(claim.metric) if claim.right is not None
                else claim.value)
        right = base + claim.margin
        holds = None if math.isnan(left) or math.isnan(right) else \
            bool(_OPS[claim.op](left, right))
        verdicts.append(Verdict(claim, left, right, holds))
    return verdicts
