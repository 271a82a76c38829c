"""SLSGD: trimmed mean plus moving average (FedML's ``slsgd``)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import ClientModel, Defense, Federation, RoundContext, Stage, StateDict
from ..metrics import report_aggregation
from ..registry import register_defense
from ._common import doc, is_float, states


@register_defense("slsgd")
class SLSGDDefense(Defense):
    """SLSGD (Xie, Koyejo, Gupta 2019, "SLSGD: Secure and efficient distributed on-device
    machine learning").

    With b = ``trim_param_b`` and Trmean_b dropping the b smallest and b largest values of each
    coordinate (``fedsec.trimmed_mean`` with beta chosen so that floor(beta n) = b):

        option_type 1:  w_g <- Trmean_b({w_i})
        option_type 2:  w_g <- (1 - alpha) w_g + alpha Trmean_b({w_i})

    Requires 2b < n. Non-floating entries come from the first client.
    """

    stages = frozenset({Stage.ON_AGGREGATION})

    @dataclass
    class Params:
        trim_param_b: int = doc(1, "values dropped at each end per coordinate; "
                                   "2b < client_num_per_round", ge=0)
        alpha: float = doc(1.0, "moving-average weight of the trimmed mean (option 2)", gt=0,
                            le=1)
        option_type: int = doc(2, "1: trimmed mean only; 2: moving average with alpha",
                               choices=(1, 2))

    @classmethod
    def validate(cls, params: "SLSGDDefense.Params", federation: Federation) -> None:
        n = federation.client_num_per_round
        if 2 * params.trim_param_b >= n:
            raise ValueError(f"trim_param_b={params.trim_param_b} is out of range: SLSGD needs "
                             f"0 <= 2b < client_num_per_round={n}")

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        n = len(models)
        b = self.params.trim_param_b
        if 2 * b >= n:
            raise ValueError(f"trim_param_b={b} needs 2b < n; round {ctx.round_index} has n={n}")
        beta = (b + 0.25) / n  # floor(beta * n) == b and beta < 0.5 when 2b < n
        trimmed, info = fedsec.trimmed_mean(states(models), beta, return_info=True)
        report_aggregation(ctx, info, n, "slsgd")
        if self.params.option_type == 1:
            return trimmed
        a = self.params.alpha
        return {k: ((1 - a) * global_model[k].to(v) + a * v if is_float(v) else v)
                for k, v in trimmed.items()}
