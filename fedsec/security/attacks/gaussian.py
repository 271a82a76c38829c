"""Gaussian noise (Blanchard et al. 2017, "Machine learning with adversaries: Byzantine tolerant
gradient descent", NeurIPS; ByzFL's ``Gaussian``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import ClientModel, RoundContext, Stage, StateDict
from ..registry import register_attack
from ._common import (BenignInformedAttack, KnowledgeParams, benign_stats, doc, replace_malicious,
                      split_round)

CENTERS = ("mean", "global")


@register_attack("gaussian", "gaussian_noise")
class GaussianAttack(BenignInformedAttack):
    """Gaussian Byzantine clients (Blanchard et al. 2017): the malicious clients send, per
    coordinate,

        w = c + N(0, gaussian_std^2),

    c the global model w_g (``gaussian_center: global``: an update of pure noise, ByzFL's
    ``Gaussian``) or the mean of the honest models the attackers see (``mean``; see
    ``attacker_knowledge``). As in ByzFL, one noise vector is drawn per round (from
    ``ctx.rng``) and every malicious client sends it. Reports ``ctx.metrics["malicious_clients"]``.
    """

    stages = frozenset({Stage.MODEL_POISONING})
    knowledge = "none with gaussian_center global; the benign mean with mean (attacker_knowledge)"

    @dataclass
    class Params(KnowledgeParams):
        gaussian_center: str = doc("global", "what the noise is centered on: global (w_g) | mean "
                                             "(the known honest models' mean)", choices=CENTERS)
        gaussian_std: float = doc(1.0, "standard deviation of the noise, per coordinate", ge=0)


    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        bad, known = split_round(self, models, ctx)
        if not bad:
            return models
        std, around_mean = self.params.gaussian_std, self.params.gaussian_center == "mean"

        def noisy(key: str, value: torch.Tensor) -> torch.Tensor:
            center = (benign_stats(models, known, key)[0] if around_mean
                      else global_model[key].detach().to(torch.float64))
            noise = torch.as_tensor(ctx.rng.standard_normal(tuple(value.shape)) * std)
            return (center + noise.to(center.device)).to(dtype=value.dtype, device=value.device)

        return replace_malicious(models, bad, noisy)
