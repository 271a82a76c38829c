"""Inner product manipulation (Xie et al. 2019, "Fall of empires: breaking Byzantine-tolerant
SGD by inner product manipulation", UAI), FedML's ``ipm``."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import ClientModel, RoundContext, Stage, StateDict
from ..registry import register_attack
from ._common import (BenignInformedAttack, KnowledgeParams, LineSearchParams, benign_stats,
                      defended_deviation, doc, line_search, replace_malicious, split_round)


@register_attack("ipm", "inner_product_manipulation")
class IPMAttack(BenignInformedAttack):
    """IPM (Xie et al. 2019): each malicious client sends the negated, scaled mean honest update

        w = w_g - epsilon * mean_i(w_i - w_g),

    over the honest models the attackers see (``attacker_knowledge``: the round's benign ones,
    or their own), so its update has inner product -epsilon ||mean update||^2 < 0 with their
    mean (unweighted, in float64). Xie et al. use small epsilon (0.1, 0.5) against Krum/median-
    type rules and large ones (e.g. 100) against averaging.

    ``ipm_optimal: true`` is ByzFL's ``Optimal_InnerProductManipulation``: epsilon is found by
    ByzFL's line search (``line_search``; ``optimal_*`` keys) maximising the distance of what
    the defense in use aggregates (``ctx.aggregate``, from the pipeline) from the known models'
    mean. With no defense the aggregate is FedAvg's mean, whose distance grows with epsilon
    without bound: the search then takes every step it is given.

    Reports ``ctx.metrics["malicious_clients"]`` and ``ctx.metrics["ipm_epsilon"]``.
    """

    stages = frozenset({Stage.MODEL_POISONING})
    knowledge = "full or partial (attacker_knowledge)"

    @dataclass
    class Params(KnowledgeParams, LineSearchParams):
        epsilon: float = doc(0.5, "scale of the negated mean benign update", gt=0)
        ipm_optimal: bool = doc(False, "find epsilon by ByzFL's line search against the "
                                       "defense in use (replaces epsilon)")


    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        bad, known = split_round(self, models, ctx)
        if not bad:
            return models
        g64 = {k: v.detach().to(torch.float64) for k, v in global_model.items()
               if v.is_floating_point()}
        means = {k: benign_stats(models, known, k)[0] for k in g64}

        def negated(eps: float):
            return lambda k, v: (g64[k] - eps * (means[k] - g64[k])).to(dtype=v.dtype,
                                                                         device=v.device)

        p = self.params
        eps = (line_search(defended_deviation(p, models, bad, known, global_model, ctx, means,
                                              negated), p)
               if p.ipm_optimal else p.epsilon)
        ctx.metrics["ipm_epsilon"] = eps
        return replace_malicious(models, bad, negated(eps))
