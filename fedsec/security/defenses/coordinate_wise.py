"""Coordinate-wise median and trimmed mean (Yin et al. 2018)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict
from ..metrics import report_aggregation
from ..registry import register_defense
from ._common import doc, states


@register_defense("coordinate_wise_median", "wise_median", "median")
class CoordinateWiseMedianDefense(Defense):
    """Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett, ICML 2018, "Byzantine-robust
    distributed learning: towards optimal statistical rates").

    w_g[j] <- median_i w_i[j] for every coordinate j (an even count gives the mean of the two
    middle values); sample counts are not used, as in the paper. ``fedsec.median``, after a
    chain's pre-aggregators with ``pre=``.
    """

    stages = frozenset({Stage.ON_AGGREGATION})
    accepts_pre = True

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        value, info = fedsec.median(states(models), return_info=True,
                                    pre=ctx.pre_aggregators or None)
        report_aggregation(ctx, info, len(models), "coordinate_wise_median")
        return value


@register_defense("coordinate_wise_trimmed_mean", "trimmed_mean")
class CoordinateWiseTrimmedMeanDefense(Defense):
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018).

    Per coordinate j, drop the k = floor(beta n) smallest and k largest values of w_i[j] and
    average the remaining n - 2k (unweighted, as in the paper). ``fedsec.trimmed_mean``, after a
    chain's pre-aggregators with ``pre=``; requires 0 <= beta < 0.5.
    """

    stages = frozenset({Stage.ON_AGGREGATION})
    accepts_pre = True

    @dataclass
    class Params:
        beta: float = doc(0.1, "fraction trimmed at each end per coordinate", ge=0,
                          lt=0.5)

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        value, info = fedsec.trimmed_mean(states(models), self.params.beta, return_info=True,
                                          pre=ctx.pre_aggregators or None)
        report_aggregation(ctx, info, len(models), "coordinate_wise_trimmed_mean")
        return value
