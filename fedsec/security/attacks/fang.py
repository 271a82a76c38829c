"""Local model poisoning (Fang, Cao, Jia, Gong 2020, "Local model poisoning attacks to
Byzantine-robust federated learning", USENIX Security)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...aggregation import solvers
from ..base import Attack, ClientModel, Federation, RoundContext, Stage, StateDict
from ..registry import register_attack
from ..state import map_floats
from ._common import KnowledgeParams, check_count, doc, replace_malicious, split_round, update_gram

TARGETS = ("krum", "trimmed_mean", "median")


def krum_lambda_bound(G: np.ndarray, n: int, c: int, d: int) -> float:
    """Fang et al.'s upper bound of lambda (Sec. 4.2) from the Gram matrix G of the k known
    updates w_i - w_Re:

        1 / ((n - 2c - 1) sqrt(d)) * min_i sum_{l in N_i} ||w_l - w_i||
          + 1 / sqrt(d) * max_i ||w_i - w_Re||,

    N_i the n - c - 2 known models nearest to w_i (all the k - 1 others when fewer are
    known), n the round's clients and c the malicious ones."""
    distances = np.sqrt(solvers.squared_distances(G))
    neighbours = min(n - c - 2, len(G) - 1)
    others = distances + np.diag(np.full(len(G), np.inf))
    nearest = np.sort(others, axis=1)[:, :neighbours].sum(axis=1)
    spread = float(nearest.min()) / ((n - 2 * c - 1) * math.sqrt(d))
    return spread + math.sqrt(float(np.diag(G).max())) / math.sqrt(d)


def krum_picks_crafted(G: np.ndarray, lam: float, c: int) -> bool:
    """Whether Krum, over the k known models and c copies of w_Re - lam s, selects a copy.
    G is the Gram matrix of [y_1 .. y_k, s] (y_i = w_i - w_Re); a copy's squared distance to
    y_i is lam^2 ||s||^2 + 2 lam <s, y_i> + ||y_i||^2, to another copy 0. Scored by the core's
    Krum solver with Krum's n - c - 2 neighbours (at least one); ties go to the known
    models."""
    k = len(G) - 1
    D = np.zeros((k + c, k + c))
    D[:k, :k] = solvers.squared_distances(G[:k, :k])
    to_copy = np.maximum(lam * lam * G[k, k] + 2 * lam * G[:k, k] + np.diag(G)[:k], 0.0)
    D[:k, k:] = to_copy[:, None]
    D[k:, :k] = to_copy[None, :]
    neighbours = min(max(1, k - 2), k + c - 1)
    scores = solvers.krum_scores(D, k + c - 2 - neighbours)
    return int(solvers.lowest(scores, 1)[0]) >= k


@register_attack("fang", "local_model_poisoning")
class FangAttack(Attack):
    """Fang et al. 2020's attacks on the rule named by ``fang_target``, from the known honest
    local models: the benign clients' (full knowledge) or the attackers' own before-attack
    models (``attacker_knowledge: partial``). s is the directed deviation, the sign of the
    change the known models make to the global model w_Re, s = sign(mean_i w_i - w_Re).

    - ``krum`` (Sec. 4.2): every malicious client sends w' = w_Re - lambda s, lambda the
      largest of lambda_0, lambda_0 / 2, ... for which Krum selects w' among the known models
      and the c crafted ones (``krum_picks_crafted``), from Fang's upper bound lambda_0
      (``krum_lambda_bound``), halved until Krum selects it or it falls below
      ``fang_threshold``. The c - 1 supporting models are copies of w' (Fang samples them in an
      epsilon-ball around it; copies are its limit, epsilon = 0, as Shejwalkar & Houmansadr's
      re-implementation sends). Every distance comes from one Gram matrix of the known updates and
      s (fedsec's core); no pass over the model per lambda. Reports
      ``ctx.metrics["fang_lambda"]``.
    - ``trimmed_mean`` / ``median`` (Sec. 4.3): per coordinate j, with w_max,j and w_min,j the
      largest and smallest known values and b = ``fang_b``, each malicious client draws its
      own value uniformly in [w_max,j, b w_max,j] (w_max,j > 0) or [w_max,j, w_max,j / b]
      where s_j = -1, and in [w_min,j / b, w_min,j] (w_min,j > 0) or [b w_min,j, w_min,j]
      where s_j = 1. With partial knowledge (Fang's estimate from the attackers' models): in
      [mu_j + 3 sigma_j, mu_j + 4 sigma_j] where s_j = -1 and [mu_j - 4 sigma_j, mu_j - 3
      sigma_j] where s_j = 1, mu and sigma the known models' mean and std. Where s_j = 0 the
      value is the known mean. Draws from ``ctx.rng``.

    Reports ``ctx.metrics["malicious_clients"]``.
    """

    stages = frozenset({Stage.MODEL_POISONING})
    knowledge = "full or partial (attacker_knowledge)"

    @dataclass
    class Params(KnowledgeParams):
        fang_target: str = doc("krum", "the rule attacked: krum | trimmed_mean | median",
                               choices=TARGETS)
        fang_b: float = doc(2.0, "b of the trimmed-mean/median attack's intervals", gt=1)
        fang_threshold: float = doc(1e-5, "Krum attack: the smallest lambda tried", gt=0)

    @classmethod
    def validate(cls, params: "FangAttack.Params", federation: Federation) -> None:
        c, n = params.byzantine_client_num, federation.client_num_per_round
        check_count("byzantine_client_num", c, federation, leave_benign=1)
        if params.fang_target == "krum" and not n > 2 * c + 2:
            raise ValueError(f"byzantine_client_num={c} is too large for fang_target=krum: "
                             f"Krum needs client_num_per_round > 2 * byzantine_client_num + 2; "
                             f"client_num_per_round={n}")

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        bad, known = split_round(self, models, ctx)
        if not bad:
            return models
        keys = [k for k, v in global_model.items() if v.is_floating_point()]
        g64 = {k: global_model[k].detach().to(torch.float64) for k in keys}
        stacked = {k: torch.stack([models[i][1][k].detach().to(torch.float64) for i in known])
                   for k in keys}
        direction = {k: torch.sign(stacked[k].mean(0) - g64[k]) for k in keys}
        if self.params.fang_target == "krum":
            return self._krum(models, global_model, ctx, bad, known, g64, direction)
        return self._trim(models, ctx, bad, stacked, direction)

    def _krum(self, models, global_model, ctx, bad, known, g64, direction):
        s_row = {k: ((g64[k] + direction[k]).to(v.dtype) if k in direction else v)
                 for k, v in global_model.items()}
        G = update_gram(self.name, [models[i][1] for i in known] + [s_row], global_model)
        d = sum(v.numel() for v in g64.values())
        c = len(bad)
        lam = krum_lambda_bound(G[:-1, :-1], len(models), c, d)
        while not krum_picks_crafted(G, lam, c) and lam >= self.params.fang_threshold:
            lam /= 2
        ctx.metrics["fang_lambda"] = lam
        return replace_malicious(models, bad, lambda k, v: (g64[k] - lam * direction[k]).to(
            dtype=v.dtype, device=v.device))

    def _trim(self, models, ctx, bad, stacked, direction):
        b, partial = self.params.fang_b, self.params.attacker_knowledge == "partial"
        bounds = {}
        for k, values in stacked.items():
            up, down = direction[k] < 0, direction[k] > 0
            mean = values.mean(0)
            if partial:
                sigma = values.std(0, correction=0)
                low = torch.where(up, mean + 3 * sigma, torch.where(down, mean - 4 * sigma, mean))
                high = torch.where(up, mean + 4 * sigma, torch.where(down, mean - 3 * sigma, mean))
            else:
                w_max, w_min = values.amax(0), values.amin(0)
                low = torch.where(up, w_max, torch.where(
                    down, torch.where(w_min > 0, w_min / b, w_min * b), mean))
                high = torch.where(up, torch.where(w_max > 0, w_max * b, w_max / b),
                                   torch.where(down, w_min, mean))
            bounds[k] = (low, high)

        def drawn(k: str, v: torch.Tensor) -> torch.Tensor:
            low, high = bounds[k]
            u = torch.as_tensor(ctx.rng.random(tuple(v.shape))).to(low.device)
            return (low + u * (high - low)).to(dtype=v.dtype, device=v.device)

        out = list(models)
        for i in bad:
            out[i] = (models[i][0], map_floats(models[i][1], drawn))
        return out
