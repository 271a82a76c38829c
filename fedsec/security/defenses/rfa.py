"""Robust federated aggregation (``rfa``): the geometric median of the local models."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict
from ..metrics import report_aggregation, report_weights
from ..registry import register_defense
from ._common import counts, doc, states
@register_defense("rfa", "robust_federated_aggregation")
class RFADefense(Defense):
    """Robust federated aggregation (Pillutla, Kakade, Harchaoui 2022, "Robust aggregation for
    federated learning").

    w_g <- argmin_z sum_i a_i ||z - w_i||, a_i = n_i / sum_j n_j (sample counts), by smoothed
    Weiszfeld iterations z <- sum_i b_i w_i with b_i proportional to a_i / max(nu, ||z - w_i||)
    (``fedsec.geometric_median``). Reports ``ctx.metrics["client_weights"]`` (the final b_i)
    and ``ctx.metrics["weiszfeld_iterations"]``. After a chain's pre-aggregators, the geometric
    median of the mixed updates (``pre=``), unweighted: they have no sample counts.
    """

    stages = frozenset({Stage.ON_AGGREGATION})
    accepts_pre = True

    @dataclass
    class Params:
        nu: float = doc(1e-6, "smoothing of the Weiszfeld iterations", gt=0)
        max_iter: int = doc(100, "largest number of Weiszfeld iterations", ge=1)
        tol: float = doc(1e-6, "relative accuracy that stops the iterations: estimated distance to "
                                "the minimiser over the median distance to the clients "
                                "(fedsec.geometric_median)", ge=0)

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        pre = ctx.pre_aggregators or None
        value, info = fedsec.geometric_median(states(models),
                                              weights=None if pre else counts(models),
                                              nu=self.params.nu, max_iter=self.params.max_iter,
                                              tol=self.params.tol, return_info=True, pre=pre)
        report_aggregation(ctx, info, len(models), "rfa")
        if info.coefficients is not None:
            report_weights(ctx, info.coefficients)
        ctx.metrics["weiszfeld_iterations"] = info.iterations
        return value

