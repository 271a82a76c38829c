"""Geometric median of means (``geo_median``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import fedsec

from ..base import ClientModel, Defense, Federation, RoundContext, Stage, StateDict
from ..metrics import report_excluded
from ..registry import register_defense
from ._common import check_int_range, client_id, doc


@register_defense("geo_median", "geometric_median")
class GeoMedianDefense(Defense):
    """Geometric median of means (Chen, Su, Xu 2017, "Distributed statistical machine learning
    in adversarial settings: Byzantine gradient descent").

    The round's n clients are split, in their order, into k = ``batch_num`` groups of
    ceil(n / k) consecutive clients (the last may be smaller); each group is averaged (weighted
    by sample counts, ``fedsec.mean``), and the new global model is the geometric median of the
    k group means, argmin_z sum_j ||z - mean_j|| (``fedsec.geometric_median``, equal weights as
    in the paper). k = n is the plain geometric median. Reports
    ``ctx.metrics["groups"]`` (lists of client ids).
    """

    stages = frozenset({Stage.ON_AGGREGATION})

    @dataclass
    class Params:
        batch_num: int = doc(1, "number of groups k; at most client_num_per_round", ge=1)
        nu: float = doc(1e-6, "smoothing of the Weiszfeld iterations", gt=0)
        max_iter: int = doc(100, "largest number of Weiszfeld iterations", ge=1)
        tol: float = doc(1e-6, "relative accuracy that stops the iterations: estimated distance to "
                                "the minimiser over the median distance to the clients "
                                "(fedsec.geometric_median)", ge=0)

    @classmethod
    def validate(cls, params: "GeoMedianDefense.Params", federation: Federation) -> None:
        check_int_range("batch_num", params.batch_num, 1, federation.client_num_per_round,
                        "client_num_per_round")

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        n = len(models)
        k = min(self.params.batch_num, n)
        size = math.ceil(n / k)
        groups = [list(range(s, min(s + size, n))) for s in range(0, n, size)]
        means = []
        for g in groups:
            value, info = fedsec.mean([models[i][1] for i in g],
                                      weights=[float(models[i][0]) for i in g], return_info=True)
            for j, reason in info.excluded.items():
                report_excluded(ctx, [g[j]], reason)
            means.append(value)
        ctx.metrics["groups"] = [[client_id(ctx, i) for i in g] for g in groups]
        return fedsec.geometric_median(means, nu=self.params.nu, max_iter=self.params.max_iter,
                                       tol=self.params.tol)
