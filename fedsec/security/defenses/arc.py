"""Adaptive robust clipping before the aggregation (``arc``)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import Federation, RoundContext, StateDict
from ..registry import register_defense
from ._common import check_byzantine, doc
from ._pre_aggregation import PreAggregationDefense


@register_defense("arc", "adaptive_robust_clipping")
class ARCDefense(PreAggregationDefense):
    """Adaptive robust clipping (Allouah, Guerraoui, Gupta, Jellouli, Rizk, Stephan 2024,
    "Boosting robustness by clipping gradients in distributed learning").

    Before the aggregation, with k = floor(2 (f / n)(n - f)) (f = ``byzantine_client_num``),
    the k updates w_i - w_g of largest norm are clipped to the norm of the (k + 1)-th largest:
    w_i <- w_g + (w_i - w_g) min(1, t / ||w_i - w_g||) (``fedsec.pre.ARC(f, center=w_g)``; the
    norm over every floating entry, as the core's rules see the models). The paper puts it in
    front of a robust rule (``defense_type: [arc, krum]``). Requires f <= n.
    ``pre_aggregator(global_model, ctx)`` gives the fedsec.pre object.
    """

    @dataclass
    class Params:
        byzantine_client_num: int = doc(1, "f, the Byzantine clients tolerated; "
                                           "floor(2 f (n - f) / n) updates are clipped", ge=0)

    @classmethod
    def validate(cls, params: "ARCDefense.Params", federation: Federation) -> None:
        check_byzantine("byzantine_client_num", params.byzantine_client_num, federation,
                        "ARC needs f <= client_num_per_round", lambda n, f: f <= n)

    def pre_aggregator(self, global_model: StateDict, ctx: RoundContext):
        return fedsec.pre.ARC(self.params.byzantine_client_num, center=global_model)
