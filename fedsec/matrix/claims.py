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
    seeds: int = 0    # the fewest seeds behind a side (a published value counts as many)

    @property
    def single_seed(self) -> bool:
        """Decided on one run per side: no spread to judge the difference against."""
        return self.seeds == 1

    @property
    def agrees(self) -> bool | None:
        return None if self.holds_here is None else self.holds_here == self.claim.expected_holds


def check_claims(matrix: MatrixConfig, results: list[CellResult]) -> list[Verdict]:
    by_cell = {r.cell.choice: r for r in results}
    verdicts = []
    for claim in matrix.claims:
        sides = [by_cell[matrix.cell(claim.left).choice]]
        if claim.right is not None:
            sides.append(by_cell[matrix.cell(claim.right).choice])
        means = [side.mean(claim.metric) for side in sides]
        left = means[0]
        right = (means[1] if claim.right is not None else claim.value) + claim.margin
        holds = None if math.isnan(left) or math.isnan(right) else \
            bool(_OPS[claim.op](left, right))
        seeds = min((stats[2] if (stats := side.stats(claim.metric)) else 0) for side in sides)
        verdicts.append(Verdict(claim, left, right, holds, seeds))
    return verdicts
