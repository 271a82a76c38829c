"""Robust learning rate (FedML's ``robust_learning_rate``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import fedsec

from ..base import ClientModel, Defense, Federation, RoundContext, Stage, StateDict
from ..metrics import report_aggregation
from ..registry import register_defense
from ._common import check_int_range, counts, doc, is_float, states


@register_defense("robust_learning_rate", "rlr")
class RobustLearningRateDefense(Defense):
    """Robust learning rate (Ozdayi, Kantarcioglu, Gel, AAAI 2021, "Defending against backdoors
    in federated learning with robust learning rate").

    With updates Delta_i = w_i - w_g and threshold theta = ``robust_threshold``, per coordinate

        eta_theta = +eta  if |sum_i sign(Delta_i)| >= theta,  else -eta
        w_g <- w_g + eta_theta * (sum_i n_i Delta_i / sum_i n_i)

    (eta = ``server_learning_rate``, n_i the sample counts). The sign vote is unweighted, as in
    the paper. The weighted mean goes through ``fedsec.mean``; the sign sum is accumulated client
    by client per parameter (no stacked copy). Non-floating entries come from the mean (first
    contributing client). Reports ``ctx.metrics["flipped_fraction"]``: the fraction of
    coordinates whose learning rate was negated.
    """

    stages = frozenset({Stage.ON_AGGREGATION})

    @dataclass
    class Params:
        robust_threshold: int = doc(4, "sign agreement needed per coordinate; at most "
                                       "client_num_per_round", ge=0)
        server_learning_rate: float = doc(1.0, "server learning rate eta", gt=0)

    @classmethod
    def validate(cls, params: "RobustLearningRateDefense.Params", federation: Federation) -> None:
        check_int_range("robust_threshold", params.robust_threshold, 0,
                        federation.client_num_per_round, "client_num_per_round")

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        avg, info = fedsec.mean(states(models), weights=counts(models), return_info=True)
        report_aggregation(ctx, info, len(models), "robust_learning_rate")
        used = list(info.used)
        eta = self.params.server_learning_rate
        out: StateDict = {}
        flipped = total = 0
        for key, value in avg.items():
            if not is_float(value):
                out[key] = value
                continue
            g = global_model[key].to(device=value.device, dtype=torch.float32)
            votes = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
            for i in used:
                votes += torch.sign(models[i][1][key].to(torch.float32) - g)
            lr = torch.where(votes.abs() >= self.params.robust_threshold,
                             torch.tensor(eta, device=value.device),
                             torch.tensor(-eta, device=value.device))
            flipped += int((lr < 0).sum())
            total += lr.numel()
            out[key] = (g + lr * (value.to(torch.float32) - g)).to(value.dtype)
        ctx.metrics["flipped_fraction"] = flipped / total if total else 0.0
        return out
