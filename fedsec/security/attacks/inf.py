"""Infinite updates (ByzFL's ``Inf``: González, Guerraoui, Pinot, Rizk, Stephan, Taïani 2025,
"ByzFL: research framework for robust federated learning")."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..base import Attack, ClientModel, Federation, RoundContext, Stage, StateDict
from ..registry import register_attack
from ._common import CountParams, check_count, replace_malicious, split_round


@register_attack("inf", "infinity")
class InfAttack(Attack):
    """ByzFL's ``Inf``: every malicious client sends a model whose floating entries are all
    +inf (an update of +inf in every coordinate). fedsec's aggregators never average a
    non-finite update: the defenses and FedAvg's mean exclude these clients and report them in
    ``ctx.metrics["excluded_clients"]`` with the reason, so the attack measures that the
    pipeline survives it. Reports ``ctx.metrics["malicious_clients"]``.
    """

    stages = frozenset({Stage.MODEL_POISONING})
    knowledge = "none"

    @dataclass
    class Params(CountParams):
        pass

    @classmethod
    def validate(cls, params: "InfAttack.Params", federation: Federation) -> None:
        check_count("byzantine_client_num", params.byzantine_client_num, federation)

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        bad, _ = split_round(self, models, ctx, leave_benign=False)
        return replace_malicious(models, bad, lambda k, v: torch.full_like(v, math.inf))
