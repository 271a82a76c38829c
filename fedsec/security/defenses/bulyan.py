"""Bulyan (FedML's ``bulyan``)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import ClientModel, Defense, Federation, RoundContext, Stage, StateDict
from ..metrics import report_aggregation
from ..registry import register_defense
from ._common import check_byzantine, doc, states


@register_defense("bulyan")
class BulyanDefense(Defense):
    """Bulyan (El Mhamdi, Guerraoui, Rouault, ICML 2018, "The hidden vulnerability of
    distributed learning in Byzantium").

    With f = ``byzantine_client_num`` and n >= 4f + 3: select theta = n - 2f models by applying
    Krum repeatedly to the remaining set, then per coordinate average the beta = theta - 2f
    selected values closest to their median (``fedsec.bulyan``). The models never selected are
    reported in ``ctx.metrics["excluded_clients"]``. After a chain's pre-aggregators, on the
    mixed updates (``pre=``).
    """

    stages = frozenset({Stage.ON_AGGREGATION})
    accepts_pre = True

    @dataclass
    class Params:
        byzantine_client_num: int = doc(1, "f; Bulyan needs client_num_per_round >= 4f + 3", ge=0)

    @classmethod
    def validate(cls, params: "BulyanDefense.Params", federation: Federation) -> None:
        check_byzantine("byzantine_client_num", params.byzantine_client_num, federation,
                        "Bulyan needs client_num_per_round >= 4f + 3",
                        lambda n, f: n >= 4 * f + 3)

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        value, info = fedsec.bulyan(states(models), self.params.byzantine_client_num,
                                    return_info=True, pre=ctx.pre_aggregators or None)
        report_aggregation(ctx, info, len(models), "bulyan")
        return value
