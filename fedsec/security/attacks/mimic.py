"""Mimic (Karimireddy, He, Jaggi 2022, "Byzantine-robust learning on heterogeneous datasets via
bucketing", ICLR)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base import ClientModel, RoundContext, Stage, StateDict, client_id
from ..registry import register_attack
from ._common import (BenignInformedAttack, KnowledgeParams, doc, replace_malicious, split_round,
                      update_gram)


def most_heterogeneous(G: np.ndarray) -> int:
    """The client whose update lies farthest along the top principal direction of the updates'
    spread, from their Gram matrix G (k x k) alone.

    With the centered Gram matrix K = H G H (H = I - 11^T / k) = U diag(lam) U^T, the top
    principal direction of the centered updates Y_c is z = Y_c^T u / sqrt(lam_1) and client i's
    projection on it is sqrt(lam_1) u_i: the k x k eigenproblem gives every projection, no
    d x d covariance is formed. z's sign is arbitrary; it is taken so that the largest
    projection in magnitude is positive, and that client is the answer (the lowest index on
    ties; client 0 when all updates coincide)."""
    k = len(G)
    H = np.eye(k) - 1.0 / k
    K = H @ G @ H
    eigenvalues, vectors = np.linalg.eigh((K + K.T) / 2)
    if eigenvalues[-1] <= 0:
        return 0
    projection = np.sqrt(eigenvalues[-1]) * vectors[:, -1]
    if projection[int(np.argmax(np.abs(projection)))] < 0:
        projection = -projection
    return int(np.argmax(projection))


@register_attack("mimic")
class MimicAttack(BenignInformedAttack):
    """Mimic (Karimireddy et al. 2022, with the warm-up of their code): every malicious client
    sends a copy of one honest client's model, the one that over-represents the direction in
    which the honest updates differ most, so a robust rule that keeps it biases the aggregate
    towards that client's data.

    In the first ``mimic_warmup_rounds`` attack rounds the copied client is chosen anew each
    round: the one with the largest projection on the top principal direction of the known
    honest updates w_i - w_g (``most_heterogeneous``, on the Gram matrix from fedsec's core).
    After the warm-up it is fixed, as in the paper; in a round it does not take part in (or
    is not among the known updates), it is chosen again on that round and fixed anew. Known
    updates: the benign clients' (full knowledge) or the attackers' own honest ones
    (``attacker_knowledge: partial``). Reports ``ctx.metrics["malicious_clients"]`` and
    ``ctx.metrics["mimic_target"]`` (the copied client's id).
    """

    stages = frozenset({Stage.MODEL_POISONING})
    knowledge = "full or partial (attacker_knowledge)"

    @dataclass
    class Params(KnowledgeParams):
        mimic_warmup_rounds: int = doc(1, "attack rounds in which the copied client is chosen "
                                          "anew; fixed afterwards", ge=1)


    def __init__(self, params=None):
        super().__init__(params)
        self.rounds_seen = 0
        self.target: int | None = None

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        bad, known = split_round(self, models, ctx)
        if not bad:
            return models
        known_ids = [client_id(ctx, i) for i in known]
        warm = self.rounds_seen < self.params.mimic_warmup_rounds
        if warm or self.target not in known_ids:
            G = update_gram(self.name, [models[i][1] for i in known], global_model)
            self.target = known_ids[most_heterogeneous(G)]
        self.rounds_seen += 1
        ctx.metrics["mimic_target"] = self.target
        copied = models[known[known_ids.index(self.target)]][1]
        return replace_malicious(models, bad, lambda k, v: copied[k].detach().to(
            dtype=v.dtype, device=v.device))

    def state_dict(self) -> dict[str, Any]:
        return {"rounds_seen": self.rounds_seen, "target": self.target}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds_seen = int(state["rounds_seen"])
        self.target = None if state["target"] is None else int(state["target"])
