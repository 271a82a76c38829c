"""Byzantine attack (FedML's ``byzantine``; the baseline attack of FedMLSecurity, Han et al.)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Attack, ClientModel, Federation, RoundContext, Stage, StateDict
from ..registry import register_attack
from ..state import map_floats
from ._common import CountParams, check_count, doc, split_round

MODES = ("random", "zero", "flip")


@register_attack("byzantine", "byzantine_attack")
class ByzantineAttack(Attack):
    """Byzantine clients replace their local model (Han et al., FedMLSecurity; FedML's
    ``ByzantineAttack``).

    Each round, ``byzantine_client_num`` of the round's clients are drawn from ``ctx.rng``
    (reproducible for a seed, new each round; or fixed: ``malicious_selection``). Their
    floating entries become

    - ``random``: w ~ N(0, 1) per coordinate (drawn from ``ctx.rng``);
    - ``zero``:   w = 0;
    - ``flip``:   w = w_g + (w_g - w_l), the local update reversed around the global model.

    Non-floating entries are kept; benign clients' entries are returned as the same objects.
    Reports ``ctx.metrics["malicious_clients"]`` (client ids).
    """

    stages = frozenset({Stage.MODEL_POISONING})
    knowledge = "none (random, zero); own update only (flip)"

    @dataclass
    class Params(CountParams):
        attack_mode: str = doc("random", "random (N(0, 1) noise) | zero | flip "
                                         "(w_g + (w_g - w_l))", choices=MODES)

    @classmethod
    def validate(cls, params: "ByzantineAttack.Params", federation: Federation) -> None:
        check_count("byzantine_client_num", params.byzantine_client_num, federation)

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        bad, _ = split_round(self, models, ctx, leave_benign=False)
        out = list(models)
        for i in bad:
            count, local = models[i]
            out[i] = (count, self._poison(local, global_model, ctx))
        return out

    def _poison(self, local: StateDict, global_model: StateDict, ctx: RoundContext) -> StateDict:
        mode = self.params.attack_mode
        if mode == "zero":
            return map_floats(local, lambda k, v: torch.zeros_like(v))
        if mode == "flip":
            def flip(k: str, v: torch.Tensor) -> torch.Tensor:
                g = global_model[k].to(v)
                return g + (g - v)

            return map_floats(local, flip)

        def noise(k: str, v: torch.Tensor) -> torch.Tensor:
            values = ctx.rng.standard_normal(tuple(v.shape))
            return torch.as_tensor(values).to(dtype=v.dtype, device=v.device)

        return map_floats(local, noise)
