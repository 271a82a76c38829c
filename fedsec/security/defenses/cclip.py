"""Centered clipping (FedML's ``cclip``)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict
from ..metrics import report_aggregation
from ..registry import register_defense
from ._common import doc, states


@register_defense("cclip", "centered_clipping", "centred_clipping")
class CClipDefense(Defense):
    """Centered clipping (Karimireddy, He, Jaggi, ICML 2021, "Learning from history for
    Byzantine robust optimization").

    From v = w_g (the last global model), ``iters`` times:

        v <- v + (1/n) sum_i (w_i - v) min(1, tau / ||w_i - v||)

    (``fedsec.centered_clip(models, tau, iters, center=w_g)``). Every client is used with
    weight 1/n; a far client moves v by at most tau / n. After a chain's pre-aggregators, on
    the mixed updates (``pre=``).
    """

    stages = frozenset({Stage.ON_AGGREGATION})
    accepts_pre = True

    @dataclass
    class Params:
        tau: float = doc(10.0, "clipping radius around the current center", gt=0)
        iters: int = doc(1, "clipping iterations (the paper uses 1 with momentum)", ge=1)

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        value, info = fedsec.centered_clip(states(models), self.params.tau, self.params.iters,
                                           center=global_model, return_info=True,
                                           pre=ctx.pre_aggregators or None)
        report_aggregation(ctx, info, len(models), "cclip")
        return value
