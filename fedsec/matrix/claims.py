"""Published findings checked on a matrix's numbers.

A claim is ``left - right op margin``, read on the per-seed values of its metric. Its verdict
comes from Welch's t interval of the difference of the two means at the claim's level (Welch
1947, with the Welch-Satterthwaite degrees of freedom; against a fixed ``value``, the
one-sample t interval):

- holds: the whole interval lies on the claimed side of the margin;
- contradicted: the whole interval lies on the other side;
- inconclusive: the interval straddles the margin, or there is none (a side with no value, or
  with one seed: no spread to build it from).

For ``~=`` the claimed side is [-margin, margin] and the other side is outside it.
Student's t quantile is the bisection of its CDF, written with the regularized incomplete beta
function (Press et al., Numerical Recipes, 3rd ed., 6.4 and 6.14).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .config import Claim, MatrixConfig
from .results import CellResult

METHOD = "Welch's t interval"
OUTCOMES = ("holds", "contradicted", "inconclusive")


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method (NR 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta I_{x}({a}, {b}) did not converge")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom:
    1 - I_{df / (df + t^2)}(df / 2, 1 / 2) / 2 for t >= 0, by symmetry below."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection of ``t_cdf`` (to 1e-12 relative)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0; got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def welch_interval(left: Sequence[float], right: Sequence[float] | float, level: float
                   ) -> tuple[float, float]:
    """The ``level`` interval of mean(left) - mean(right) (Welch's t, df by Welch-Satterthwaite),
    or of mean(left) - right for a number (the one-sample t interval). Each sample needs two
    values or more; with no spread at all the interval is the point difference."""
    samples = [left] if isinstance(right, (int, float)) else [left, right]
    if any(len(s) < 2 for s in samples):
        raise ValueError(f"an interval needs two values per side; got "
                         f"{[len(s) for s in samples]}")
    shift = right if isinstance(right, (int, float)) else statistics.fmean(right)
    difference = statistics.fmean(left) - shift
    parts = [statistics.variance(s) / len(s) for s in samples]  # squared standard errors
    spread = sum(parts)
    if spread == 0.0:
        return difference, difference
    df = spread ** 2 / sum(v * v / (len(s) - 1) for v, s in zip(parts, samples))
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(spread)
    return difference - half, difference + half


def decide(op: str, interval: tuple[float, float] | None, margin: float) -> str:
    """holds / contradicted / inconclusive for ``difference op margin`` from its interval;
    ``>=`` and ``<=`` count an interval that touches the margin as on their side."""
    if interval is None:
        return "inconclusive"
    lo, hi = interval
    if op == "~=":
        inside, outside = -margin <= lo and hi <= margin, lo > margin or hi < -margin
    elif op in (">=", ">"):
        strict = op == ">"
        inside = lo > margin if strict else lo >= margin
        outside = hi <= margin if strict else hi < margin
    else:
        strict = op == "<"
        inside = hi < margin if strict else hi <= margin
        outside = lo >= margin if strict else lo > margin
    return "holds" if inside else "contradicted" if outside else "inconclusive"


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    left: float            # mean of the left cell (nan: no seed has the metric)
    right: float           # mean of the right cell, or the claim's value
    left_seeds: int
    right_seeds: int | None  # None: a fixed value
    interval: tuple[float, float] | None  # of left - right at claim.level; None: no interval
    outcome: str           # one of OUTCOMES

    @property
    def difference(self) -> float:
        return self.left - self.right

    @property
    def seeds(self) -> int:
        """The fewest seeds behind a side (a fixed value counts as many)."""
        return min(self.left_seeds, self.left_seeds if self.right_seeds is None
                   else self.right_seeds)

    @property
    def no_data(self) -> bool:
        return self.seeds == 0

    @property
    def single_seed(self) -> bool:
        """Decided on one run per side: no spread to build an interval from."""
        return self.seeds == 1

    @property
    def agrees(self) -> bool | None:
        """Whether the verdict here matches what the source found (None: inconclusive)."""
        if self.outcome == "inconclusive":
            return None
        return (self.outcome == "holds") == self.claim.expected_holds


def _values(result: CellResult, metric: str) -> list[float]:
    return [v for v in (s.metric(metric) for s in result.seeds) if v is not None]


def check_claims(matrix: MatrixConfig, results: list[CellResult]) -> list[Verdict]:
    by_cell = {r.cell.choice: r for r in results}
    verdicts = []
    for claim in matrix.claims:
        left = _values(by_cell[matrix.cell(claim.left).choice], claim.metric)
        right = (_values(by_cell[matrix.cell(claim.right).choice], claim.metric)
                 if claim.right is not None else claim.value)
        fixed = claim.right is None
        samples = [left] if fixed else [left, right]
        interval = (welch_interval(left, right, claim.level)
                    if all(len(s) >= 2 for s in samples) else None)
        verdicts.append(Verdict(
            claim, statistics.fmean(left) if left else math.nan,
            right if fixed else (statistics.fmean(right) if right else math.nan),
            len(left), None if fixed else len(right), interval,
            decide(claim.op, interval, claim.margin)))
    return verdicts
