"""Inner product manipulation (Xie et al. 2019, "Fall of empires: breaking Byzantine-tolerant
SGD by inner product manipulation", UAI), FedML's ``ipm``."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Attack, ClientModel, Federation, RoundContext, Stage, StateDict
from ..registry import register_attack
from ._common import (check_count, check_positive, choose_malicious, client_id, doc,
                      replace_malicious, report_malicious)


@register_attack("ipm", "inner_product_manipulation")
class IpmAttack(Attack):
    """IPM (Xie et al. 2019): each malicious client sends the negated, scaled mean benign update

        w = w_g - epsilon * mean_benign(w_l - w_g),

    so its update has inner product -epsilon ||mean benign update||^2 < 0 with the benign mean
    (unweighted mean, computed in float64). ``byzantine_client_num`` malicious clients per round
    are drawn from ``ctx.rng``. Xie et al. use small epsilon (0.1, 0.5) against Krum/median-type
    rules and large ones (e.g. 100) against averaging. Reports
    ``ctx.metrics["malicious_clients"]``.
    """

    stages = frozenset({Stage.MODEL_POISONING})

    @dataclass
    class Params:
        byzantine_client_num: int = doc(1, "malicious clients per round; at least one client "
                                           "stays benign")
        epsilon: float = doc(0.5, "scale of the negated mean benign update (> 0)")

    @classmethod
    def validate(cls, params: "IpmAttack.Params", federation: Federation) -> None:
        check_count("byzantine_client_num", params.byzantine_client_num, federation,
                    leave_benign=1)
        check_positive("epsilon", params.epsilon)

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        n, m = len(models), self.params.byzantine_client_num
        if m >= n:
            raise ValueError(f"ipm: byzantine_client_num={m} leaves no benign client among the "
                             f"round's {n}")
        bad = choose_malicious(ctx, n, m)
        report_malicious(ctx, [client_id(ctx, i) for i in bad])
        if not bad:
            return models
        benign = [i for i in range(n) if i not in bad]
        eps = self.params.epsilon

        def negated(k: str, v: torch.Tensor) -> torch.Tensor:
            g = global_model[k].detach().to(torch.float64)
            mean_update = torch.stack([models[i][1][k].detach().to(torch.float64) - g
                                       for i in benign]).mean(0)
            return (g - eps * mean_update).to(dtype=v.dtype, device=v.device)

        return replace_malicious(models, bad, negated)
