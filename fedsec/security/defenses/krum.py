"""Krum and multi-Krum as a client filter (FedML's ``krum``)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

import fedsec
from fedsec.aggregation.solvers import lowest

from ..base import keep_models, ClientModel, Defense, Federation, RoundContext, Stage, StateDict
from ..metrics import report_aggregation
from ..registry import register_defense
from ._common import check_byzantine, check_int_range, client_id, doc, states


@register_defense("krum", "multikrum", "multi_krum")
class KrumDefense(Defense):
    """Krum / multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017).

    score(i) = sum of ||x_i - x_j||^2 over the n - f - 2 nearest other updates j (f =
    ``byzantine_client_num``); the ``krum_param_m`` models with the lowest scores are kept
    (m = 1 is Krum, m > 1 multi-Krum; ties to the lower position; at most the finite ones), and
    the FL optimizer's own aggregation averages them. Requires n > 2f + 2 and 1 <= m <= n.
    Scores from ``fedsec.krum_scores`` (one Gram pass; no average is formed here, the
    aggregation does that once). Reports the others in
    ``ctx.metrics["excluded_clients"]`` and ``ctx.metrics["krum_scores"]`` ({id: score}).
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION})

    @dataclass
    class Params:
        byzantine_client_num: int = doc(1, "f, the Byzantine clients tolerated; "
                                           "client_num_per_round > 2f + 2", ge=0)
        krum_param_m: int = doc(1, "models kept (1 = Krum); at most client_num_per_round",
                                 ge=1)

    @classmethod
    def validate(cls, params: "KrumDefense.Params", federation: Federation) -> None:
        check_byzantine("byzantine_client_num", params.byzantine_client_num, federation,
                        "Krum needs client_num_per_round > 2f + 2", lambda n, f: n > 2 * f + 2)
        check_int_range("krum_param_m", params.krum_param_m, 1, federation.client_num_per_round,
                        "client_num_per_round")

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        scores, info = fedsec.krum_scores(states(models), self.params.byzantine_client_num,
                                          return_info=True)
        m = min(self.params.krum_param_m, int(np.isfinite(scores).sum()))
        kept = sorted(int(i) for i in lowest(scores, m))
        ctx.metrics["krum_scores"] = {client_id(ctx, i): float(s) for i, s in enumerate(scores)}
        report_aggregation(ctx, replace(info, used=tuple(kept)), len(models), "krum")
        return keep_models(models, kept, ctx)
