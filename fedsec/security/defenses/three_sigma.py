"""The three-sigma defenses: ``three_sigma`` (distance to the global model, FedML's
ThreeSigmaDefense) and FedML's variants ``3sigma_geo`` (distance to the geometric median) and
``3sigma_foolsgold`` (FoolsGold score)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

import fedsec

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict, keep_models
from ..metrics import report_excluded
from ..registry import register_defense
from ..state import diff_norm
from ._common import (client_id, cosine_matrix, doc, finite_rows, keep_global, output_layer,
                      score_bounds, states, update_matrix)


@register_defense("three_sigma", "3sigma", "three_sigma_defense")
class ThreeSigmaDefense(Defense):
    """Three-sigma rule on distances to the coordinate-wise median (Han et al., FedMLSecurity;
    the scoring of FedML's ThreeSigma defenses, with the median of Yin et al. 2018 as center).

    Before aggregation, each client's score is s_i = ||w_i - median_coordinatewise(w)||_2
    (``fedsec.median``; weight parameters), and a client is dropped when

        s_i > mu + threshold_sigma * sigma.

    With ``robust`` (default) mu = median(s) and sigma = 1.4826 * median(|s - median(s)|) (MAD).
    FedML uses the sample mean and standard deviation (``robust: false``), but an outlier
    inflates them: among n clients a single point's z-score is at most (n - 1) / sqrt(n), below
    3 for n <= 10, so the plain rule can never drop one attacker out of 10; we follow the robust
    statistics. When sigma is 0 (identical scores), only scores above mu are dropped.
    Reports ``ctx.metrics["three_sigma_scores"]`` ({id: score}),
    ``ctx.metrics["three_sigma_bound"]`` and the dropped ids in
    ``ctx.metrics["excluded_clients"]``.
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION})

    @dataclass
    class Params:
        threshold_sigma: float = doc(3.0, "how many sigmas above mu a score may be", gt=0)
        robust: bool = doc(True, "median/MAD (true) or mean/sample std as FedML (false)")

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        if len(models) < 3:
            return models
        med, info = fedsec.median(states(models), return_info=True)
        used = list(info.used)
        for i, reason in info.excluded.items():
            report_excluded(ctx, [i], reason)
        scores = np.array([diff_norm(models[i][1], med) for i in used])
        _, bound = score_bounds(scores, self.params.threshold_sigma, self.params.robust)
        ctx.metrics["three_sigma_scores"] = {client_id(ctx, i): float(s)
                                             for i, s in zip(used, scores)}
        ctx.metrics["three_sigma_bound"] = bound
        keep = [i for i, s in zip(used, scores) if s <= bound]
        report_excluded(ctx, [i for i, s in zip(used, scores) if s > bound],
                        f"three_sigma: distance to the median above {bound:.6g}")
        return keep_models(models, keep, ctx)


class FedMLThreeSigma(Defense):
    """FedML's ThreeSigma*Defense scheme (FedMLSecurity, Han et al. 2023): a score per client,
    a normal distribution of the scores fitted once, clients outside it excluded.

    Before aggregation, each client gets a score (``client_scores``). The scores of the first
    ``pretraining_round_num - 1`` rounds this defense sees (FedML's counter starts at 1: by
    default the first round's) fix mu and sigma; in every round, also those, a client is
    excluded when its score is beyond mu + threshold_sigma * sigma on the suspicious side
    (above for a distance, below for a trust score). The FL optimizer's own aggregation then
    averages the rest. When no client is left the round keeps the global model (FedML would
    aggregate nothing). A client whose update is not finite is excluded first.

    ``robust: false`` fits mean and sample std, as FedML; ``robust: true`` the median and
    1.4826 * MAD (as fedsec's ``three_sigma``: attackers inflate the sample std, so among n
    clients a z-score above (n - 1) / sqrt(n) is impossible). Reports
    ``ctx.metrics["<name>_scores"]`` ({id: score}), ``ctx.metrics["<name>_bound"]`` and the
    excluded clients in ``ctx.metrics["excluded_clients"]``.
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION})
    suspicious_side: ClassVar[str] = "high"  # "high": large scores are outliers; "low": small

    def __init__(self, params=None):
        super().__init__(params)
        self.fitted_scores: list[float] = []
        self.rounds_seen = 0

    def state_dict(self) -> dict:
        return {"fitted_scores": list(self.fitted_scores), "rounds_seen": self.rounds_seen}

    def load_state_dict(self, state: dict) -> None:
        self.fitted_scores = [float(s) for s in state["fitted_scores"]]
        self.rounds_seen = int(state["rounds_seen"])

    def client_scores(self, models: list[ClientModel], global_model: StateDict,
                      ids: list[int], ctx: RoundContext) -> np.ndarray:
        """One score per model (``ids``: their clients)."""
        raise NotImplementedError

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        p = self.params
        finite = finite_rows(update_matrix(models, global_model), ctx)
        kept = [models[i] for i in finite]
        ids = [client_id(ctx, i) for i in finite]
        scores = self.client_scores(kept, global_model, ids, ctx)
        self.rounds_seen += 1
        if self.rounds_seen < p.pretraining_round_num:
            self.fitted_scores.extend(float(s) for s in scores)
        low, high = score_bounds(np.array(self.fitted_scores), p.threshold_sigma, p.robust)
        bound = high if self.suspicious_side == "high" else low
        outside = scores > bound if self.suspicious_side == "high" else scores < bound
        ctx.metrics[f"{self.name}_scores"] = {c: float(s) for c, s in zip(ids, scores)}
        ctx.metrics[f"{self.name}_bound"] = bound
        side = "above" if self.suspicious_side == "high" else "below"
        report_excluded(ctx, [i for i, out in zip(finite, outside) if out],
                        f"{self.name}: score {side} {bound:.6g}")
        keep = [i for i, out in zip(finite, outside) if not out]
        return keep_models(models, keep, ctx) if keep else keep_global(global_model, ctx)


@dataclass
class ThreeSigmaParams:
    threshold_sigma: float = doc(1.0, "how many sigmas from mu a score may be (FedML: 1)", gt=0)
    robust: bool = doc(False, "median/MAD (true) or mean/sample std as FedML (false)")
    pretraining_round_num: int = doc(2, "FedML's key: the scores of the first "
                                        "pretraining_round_num - 1 rounds fix mu and sigma",
                                     ge=2)


@register_defense("3sigma_geo", "three_sigma_geo", "three_sigma_geomedian")
class ThreeSigmaGeoMedianDefense(FedMLThreeSigma):
    """FedML's ``3sigma_geo`` (ThreeSigmaGeoMedianDefense; FedMLSecurity, Han et al. 2023):
    the score of a client is the L2 distance of its output layer's weight (FedML's "importance
    feature", the state_dict's last weight matrix) to the geometric median of the round's
    (``fedsec.geometric_median``, uniform weights), large scores are outliers; the scheme is
    ``FedMLThreeSigma``'s. FedML computes the median in the first round only and measures
    later rounds against it, so a model that has moved on looks like an outlier; here the
    median is the round's own."""

    suspicious_side = "high"
    Params = ThreeSigmaParams

    def client_scores(self, models: list[ClientModel], global_model: StateDict,
                      ids: list[int], ctx: RoundContext) -> np.ndarray:
        weight, _ = output_layer(global_model)
        features = [state[weight].detach().to(torch.float64) for _, state in models]
        center = fedsec.geometric_median(features)
        return np.array([float(torch.linalg.vector_norm(f - center)) for f in features])


@dataclass
class ThreeSigmaFoolsGoldParams(ThreeSigmaParams):
    threshold_sigma: float = doc(2.0, "how many sigmas below mu a score may be (FedML: 2)",
                                 gt=0)


@register_defense("3sigma_foolsgold", "three_sigma_foolsgold")
class ThreeSigmaFoolsGoldDefense(FedMLThreeSigma):
    """FedML's ``3sigma_foolsgold`` (ThreeSigmaDefense_Foolsgold; FedMLSecurity, Han et al.
    2023): the score of a client is FedML's FoolsGold score (Fung et al., RAID 2020) of the
    history of its output-layer weight updates; small scores (sybils that send alike updates)
    are outliers; the scheme is ``FedMLThreeSigma``'s.

    History H_i = the sum of client i's output-layer weight updates w_i - w_g over the rounds
    it took part in (by client id; FedML sums the raw weights by position in the round, which
    under partial participation mixes clients, and shared weights make every cosine near 1).
    Score (FedML's ``fools_gold_score``): cs_ij = cos(H_i, H_j), cs_ii = 0, pardoning
    cs_ij *= v_i / v_j when v_i < v_j (v_i = max_j cs_ij), alpha = 1 - max_j cs_ij with alpha > 1
    set to 1 and alpha <= 0 to 1e-15, alpha /= max(alpha), alpha = 1 set to 0.999999, score =
    ln(alpha / (1 - alpha)) + 0.5 (not clipped, unlike FoolsGold's weights). FedML's
    bucketing after the exclusion is left out: its default bucket of one client is the
    identity. Memory: one vector of the output layer's size per client ever seen, at most
    client_num_in_total.
    """

    suspicious_side = "low"
    Params = ThreeSigmaFoolsGoldParams

    def __init__(self, params=None):
        super().__init__(params)
        self.histories: dict[int, torch.Tensor] = {}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "histories": dict(self.histories)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.histories = {int(c): h.clone() for c, h in state["histories"].items()}

    def client_scores(self, models: list[ClientModel], global_model: StateDict,
                      ids: list[int], ctx: RoundContext) -> np.ndarray:
        weight, _ = output_layer(global_model)
        updates = update_matrix(models, global_model, [weight])
        for cid, row in zip(ids, updates):
            self.histories[cid] = self.histories[cid] + row if cid in self.histories else row
        return fedml_foolsgold_scores(torch.stack([self.histories[c] for c in ids]))


def fedml_foolsgold_scores(histories: torch.Tensor) -> np.ndarray:
    """FedML's ``fools_gold_score`` of the rows of ``histories`` (see
    ``ThreeSigmaFoolsGoldDefense``)."""
    n = len(histories)
    if n < 2:
        return np.full(n, math.log(0.999999 / (1 - 0.999999)) + 0.5)
    cs = cosine_matrix(histories)
    np.fill_diagonal(cs, 0.0)
    v = cs.max(axis=1)
    pardon = (v[:, None] < v[None, :]) & (v[None, :] != 0)
    cs = np.where(pardon, cs * v[:, None] / np.where(v[None, :] != 0, v[None, :], 1.0), cs)
    alpha = 1.0 - cs.max(axis=1)
    alpha = np.where(alpha > 1.0, 1.0, alpha)
    alpha = np.where(alpha <= 0.0, 1e-15, alpha)
    alpha = alpha / alpha.max()
    alpha = np.where(alpha == 1.0, 0.999999, alpha)
    return np.log(alpha / (1.0 - alpha)) + 0.5
