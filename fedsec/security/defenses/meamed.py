"""The mean around the median as the aggregation (``meamed``)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import ClientModel, Defense, Federation, RoundContext, Stage, StateDict
from ..metrics import report_aggregation
from ..registry import register_defense
from ._common import check_byzantine, doc, states


@register_defense("meamed", "mean_around_median")
class MeamedDefense(Defense):
    """Mean around the median (Xie, Koyejo, Gupta 2018, "Generalized Byzantine-tolerant SGD").

    w_g[j] <- the mean of the n - f values w_i[j] closest to their median, for every coordinate
    j (f = ``byzantine_client_num``; on a distance tie the larger value is dropped; sample
    counts are not used, as in the paper). ``fedsec.meamed``; requires n > 2f.
    """

    stages = frozenset({Stage.ON_AGGREGATION})

    @dataclass
    class Params:
        byzantine_client_num: int = doc(1, "f, the Byzantine clients tolerated; "
                                           "client_num_per_round > 2f", ge=0)

    @classmethod
    def validate(cls, params: "MeamedDefense.Params", federation: Federation) -> None:
        check_byzantine("byzantine_client_num", params.byzantine_client_num, federation,
                        "meamed needs client_num_per_round > 2f", lambda n, f: n > 2 * f)

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        value, info = fedsec.meamed(states(models), self.params.byzantine_client_num,
                                    return_info=True)
        report_aggregation(ctx, info, len(models), "meamed")
        return value
