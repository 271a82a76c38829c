"""FoolsGold (FedML's ``foolsgold``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import fedsec

from ...aggregation.solvers import cosine_similarities
from ..base import ClientModel, Defense, RoundContext, Stage, StateDict
from ..metrics import report_excluded, report_weights
from ..registry import register_defense
from ._common import client_id, doc, finite_rows, update_matrix


@register_defense("foolsgold", "fools_gold")
class FoolsGoldDefense(Defense):
    """FoolsGold (Fung, Yoon, Beschastnikh, RAID 2020, "The limitations of federated learning in
    sybil settings"), Algorithm 1 without the optional feature-importance weighting.

    Each client i keeps a history H_i = sum over the rounds it took part in of its update
    Delta_i = w_i - w_g (weight parameters, flattened, float32). Each round, for the round's
    clients:

        cs_ij = cos(H_i, H_j) for i != j, cs_ii = 0;   v_i = max_j cs_ij
        pardoning:  cs_ij <- cs_ij * v_i / v_j   when v_i < v_j
        alpha_i = 1 - max_j cs_ij, clipped to [0, 1], then alpha <- alpha / max(alpha)
        alpha_i = 0.99 where alpha_i = 1
        alpha_i = kappa * (ln(alpha_i / (1 - alpha_i)) + 0.5), clipped to [0, 1]

    and w_g <- w_g + sum_i alpha_i Delta_i / sum_i alpha_i, i.e. ``fedsec.mean`` of the models
    with weights alpha (the paper's learning-rate-scaled sum, normalised as a weighted average;
    sample counts are not used, as in the paper). When every alpha is 0 the global model is
    kept. Sybils sending the same update get cosine 1 and weight 0.

    Memory: one float32 vector of the model's weight-parameter count d per client ever seen; at
    most ``client_num_in_total`` vectors (a client id beyond that count is an error). The
    history lives in this object, which the experiment owns. A client whose update is not
    finite is excluded and its history left unchanged. Reports ``ctx.metrics["client_weights"]``
    ({id: alpha}) and the zero-weight clients in ``ctx.metrics["excluded_clients"]``.
    """

    stages = frozenset({Stage.ON_AGGREGATION})

    @dataclass
    class Params:
        kappa: float = doc(1.0, "confidence parameter of the logit re-weighting", gt=0)

    def __init__(self, params=None):
        super().__init__(params)
        self.histories: dict[int, torch.Tensor] = {}

    def state_dict(self) -> dict:
        return {"histories": dict(self.histories)}

    def load_state_dict(self, state: dict) -> None:
        self.histories = {int(c): h.clone() for c, h in state["histories"].items()}

    def _record(self, cid: int, delta: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        if cid not in self.histories:
            federation = self.setting.federation
            cap = federation.client_num_in_total if federation is not None else None
            if cap is not None and len(self.histories) >= cap:
                raise ValueError(f"foolsgold: client id {cid} would be history number "
                                 f"{len(self.histories) + 1}, more than client_num_in_total="
                                 f"{cap}")
            self.histories[cid] = delta.clone()
        else:
            self.histories[cid] += delta
        return self.histories[cid]

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        n = len(models)
        active, hist = [], []
        updates = update_matrix(models, global_model, dtype=torch.float32)
        for i in finite_rows(updates, ctx):
            active.append(i)
            hist.append(self._record(client_id(ctx, i), updates[i], ctx))
        alpha_active = foolsgold_weights(hist, self.params.kappa)
        alpha = np.zeros(n)
        alpha[active] = alpha_active
        report_weights(ctx, alpha)
        report_excluded(ctx, [i for i in active if alpha[i] == 0], "foolsgold weight 0")
        if alpha.sum() <= 0:
            return {k: v.clone() for k, v in global_model.items()}
        keep = [i for i in range(n) if alpha[i] > 0]
        return fedsec.mean([models[i][1] for i in keep], weights=[float(alpha[i]) for i in keep])


def foolsgold_weights(histories: list[torch.Tensor], kappa: float) -> np.ndarray:
    """The FoolsGold weights alpha of clients with the given update histories."""
    n = len(histories)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.ones(1)
    G = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            G[i, j] = G[j, i] = float(torch.dot(histories[i].double(), histories[j].double()))
    cs = cosine_similarities(G)
    np.fill_diagonal(cs, 0.0)
    v = cs.max(axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and v[i] < v[j] and v[j] > 0:
                cs[i, j] *= v[i] / v[j]
    wv = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    top = wv.max()
    if top <= 0:
        return np.zeros(n)
    wv = wv / top
    wv[wv == 1.0] = 0.99
    with np.errstate(divide="ignore"):
        logit = np.log(wv / (1.0 - wv))
    wv = kappa * (logit + 0.5)
    wv[np.isnan(wv)] = 0.0
    return np.clip(wv, 0.0, 1.0)  # -inf (alpha 0) -> 0
