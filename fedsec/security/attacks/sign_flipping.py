"""Sign flipping (Allen-Zhu, Ebrahimian, Li, Alistarh 2021, "Byzantine-resilient non-convex
stochastic gradient descent", ICLR; ByzFL's ``SignFlipping``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Attack, ClientModel, Federation, RoundContext, Stage, StateDict
from ..registry import register_attack
from ..state import map_floats
from ._common import CountParams, check_count, doc, split_round


@register_attack("sign_flipping", "signflip")
class SignFlippingAttack(Attack):
    """Sign flipping (Allen-Zhu et al. 2021): each malicious client sends its own honest update
    reversed and scaled by k = ``sign_flipping_scale``,

        w = w_g - k (w_l - w_g),

    w_l its honestly trained local model (so k = 1 is byzantine's ``flip`` mode). Each client
    flips its own update, so no knowledge of the others is needed. Reports
    ``ctx.metrics["malicious_clients"]``.
    """

    stages = frozenset({Stage.MODEL_POISONING})
    knowledge = "own update only"

    @dataclass
    class Params(CountParams):
        sign_flipping_scale: float = doc(1.0, "k: the flipped update is -k times the honest "
                                              "one", gt=0)

    @classmethod
    def validate(cls, params: "SignFlippingAttack.Params", federation: Federation) -> None:
        check_count("byzantine_client_num", params.byzantine_client_num, federation)

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        bad, _ = split_round(self, models, ctx, leave_benign=False)
        k = self.params.sign_flipping_scale

        def flipped(key: str, value: torch.Tensor) -> torch.Tensor:
            g = global_model[key].detach().to(torch.float64)
            w = g - k * (value.detach().to(torch.float64) - g)
            return w.to(dtype=value.dtype, device=value.device)

        out = list(models)
        for i in bad:
            out[i] = (models[i][0], map_floats(models[i][1], flipped))
        return out
