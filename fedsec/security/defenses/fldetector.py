"""FLDetector (``fldetector``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict, keep_models
from ..metrics import report_excluded
from ..registry import register_defense
from ._common import (client_id, doc, finite_rows, gap_statistic, kmeans_1d, update_matrix,
                      weight_keys, within_1d)


@register_defense("fldetector", "fl_detector")
class FLDetectorDefense(Defense):
    """FLDetector (Zhang, Cao, Jia, Gong, KDD 2022, "FLDetector: defending federated learning
    against model poisoning attacks via detecting malicious clients"), Algorithms 1 and 2.

    With g_t^i = w_t - w_t^i the pseudo-gradient of client i at the global model w_t (weight
    parameters, flattened) and g_t the round's aggregate (the sample-count weighted mean of the
    clients kept, as FedAvg), each round t, before aggregation:

    1. Hessian-vector product: L-BFGS (``lbfgs_hvp``) from the last N pairs
       (Delta w_k, Delta g_k) = (w_k - w_(k-1), g_k - g_(k-1)), N = ``fldetector_window``,
       applied to v = w_t - w_(t-1);
    2. predicted update g^_t^i = g_(t-1)^i + H v for each client that took part in round t-1,
       distance d_t^i = ||g^_t^i - g_t^i||, normalised over the scored clients (d / sum d);
    3. suspicious score s_t^i = the mean of client i's last N normalised distances;
    4. once clients have N scores: the gap statistic (``gap_statistic``, exact 1-D k-means,
       k <= ``fldetector_k_max``, ``fldetector_gap_references`` uniform reference sets) on
       their scores; k > 1 means an attack: 2-means splits them and the cluster with the
       larger mean score is malicious.

    Detected clients are excluded from this round on and never come back. With
    ``fldetector_restart`` (the paper's recovery: drop the detected clients and train again),
    the global model returns to the first one this defense saw, after the detection round's
    aggregation, and the history starts over (the server optimizer's state, e.g. FedAdam's
    moments, is the experiment's and is kept). The FL optimizer's aggregation averages the
    clients kept.

    State (saved in the run's checkpoint): the N pairs, the last global model and aggregate,
    the last round's pseudo-gradients, each client's last N scores, the detected clients and
    the first global model: about 2N + 3 + client_num_per_round vectors of the model's size. A client whose update is not finite is excluded that round.
    Reports ``ctx.metrics["fldetector_scores"]`` ({id: s}), ``fldetector_clusters`` (k),
    ``fldetector_detected`` (every client detected so far) and the excluded clients in
    ``ctx.metrics["excluded_clients"]``.
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION, Stage.AFTER_AGGREGATION})

    @dataclass
    class Params:
        fldetector_window: int = doc(10, "N: the L-BFGS pairs kept and the rounds a "
                                         "suspicious score averages", ge=1)
        fldetector_restart: bool = doc(True, "after a detection, restart from the first "
                                             "global model without the detected clients")
        fldetector_k_max: int = doc(7, "most clusters the gap statistic may choose", ge=2)
        fldetector_gap_references: int = doc(10, "uniform reference sets of the gap "
                                                 "statistic", ge=1)

    def __init__(self, params=None):
        super().__init__(params)
        self.initial_model: StateDict | None = None
        self.restart_now = False
        self.detected: set[int] = set()
        self._forget()

    def _forget(self) -> None:
        """The history of one training run (cleared on a restart)."""
        self.weight_diffs: list[torch.Tensor] = []
        self.update_diffs: list[torch.Tensor] = []
        self.last_round: int | None = None
        self.last_weights: torch.Tensor | None = None
        self.last_aggregate: torch.Tensor | None = None
        self.client_updates: dict[int, torch.Tensor] = {}
        self.windows: dict[int, list[float]] = {}

    def state_dict(self) -> dict:
        return {"initial_model": self.initial_model, "detected": sorted(self.detected),
                "weight_diffs": list(self.weight_diffs), "update_diffs": list(self.update_diffs),
                "last_round": self.last_round, "last_weights": self.last_weights,
                "last_aggregate": self.last_aggregate,
                "client_updates": dict(self.client_updates),
                "windows": {c: list(w) for c, w in self.windows.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.initial_model = state["initial_model"]
        self.detected = {int(c) for c in state["detected"]}
        self.weight_diffs = list(state["weight_diffs"])
        self.update_diffs = list(state["update_diffs"])
        self.last_round = state["last_round"]
        self.last_weights = state["last_weights"]
        self.last_aggregate = state["last_aggregate"]
        self.client_updates = {int(c): u for c, u in state["client_updates"].items()}
        self.windows = {int(c): [float(s) for s in w] for c, w in state["windows"].items()}

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        p = self.params
        if self.initial_model is None:
            self.initial_model = {k: v.detach().clone() for k, v in global_model.items()}
        keys = weight_keys(global_model)
        gradients = -update_matrix(models, global_model, keys)
        finite = finite_rows(gradients, ctx)
        earlier = [i for i in finite if client_id(ctx, i) in self.detected]
        report_excluded(ctx, earlier, "fldetector: detected in an earlier round")
        active = [i for i in finite if i not in earlier]
        ids = {i: client_id(ctx, i) for i in active}
        weights = torch.cat([global_model[k].detach().to(torch.float64).cpu().reshape(-1)
                             for k in keys])
        follows = self.last_round is not None and ctx.round_index == self.last_round + 1
        if follows and self.weight_diffs:
            self._score(gradients, active, ids, weights - self.last_weights)
        malicious = self._detect(active, ids, ctx)
        report_excluded(ctx, malicious, "fldetector: in the cluster of larger suspicious scores")
        kept = [i for i in active if i not in malicious]
        counts = torch.tensor([float(models[i][0]) for i in kept], dtype=torch.float64)
        aggregate = (counts[:, None] * gradients[kept]).sum(0) / counts.sum() if kept else None
        if follows and aggregate is not None:
            self.weight_diffs.append(weights - self.last_weights)
            self.update_diffs.append(aggregate - self.last_aggregate)
            del self.weight_diffs[:-p.fldetector_window], self.update_diffs[:-p.fldetector_window]
        self.last_round, self.last_weights, self.last_aggregate = (ctx.round_index, weights,
                                                                   aggregate)
        self.client_updates = {ids[i]: gradients[i] for i in active}
        ctx.metrics["fldetector_detected"] = sorted(self.detected)
        if malicious and p.fldetector_restart:
            self.restart_now = True
        return keep_models(models, kept, ctx)

    def _score(self, gradients: torch.Tensor, active: list[int], ids: dict[int, int],
               v: torch.Tensor) -> None:
        """Steps 1-3: this round's normalised distances into the clients' windows."""
        hvp = lbfgs_hvp(torch.stack(self.weight_diffs), torch.stack(self.update_diffs), v)
        scored = [i for i in active if ids[i] in self.client_updates]
        distances = np.array([float(torch.linalg.vector_norm(
            self.client_updates[ids[i]] + hvp - gradients[i])) for i in scored])
        total = distances.sum()
        if total <= 0 or not np.isfinite(total):
            return
        for i, d in zip(scored, distances / total):
            window = self.windows.setdefault(ids[i], [])
            window.append(float(d))
            del window[:-self.params.fldetector_window]

    def _detect(self, active: list[int], ids: dict[int, int], ctx: RoundContext) -> list[int]:
        """Step 4: the positions judged malicious this round (their ids join ``detected``)."""
        p = self.params
        judged = [i for i in active if len(self.windows.get(ids[i], [])) == p.fldetector_window]
        if len(judged) < 3:
            return []
        scores = np.array([np.mean(self.windows[ids[i]]) for i in judged])
        ctx.metrics["fldetector_scores"] = {ids[i]: float(s) for i, s in zip(judged, scores)}
        k, _, _ = gap_statistic(scores[:, None], p.fldetector_k_max,
                                p.fldetector_gap_references, ctx.rng, within_1d)
        ctx.metrics["fldetector_clusters"] = int(k)
        if k <= 1:
            return []
        labels, _ = kmeans_1d(scores, 2)  # label 1: the cluster of larger scores
        malicious = [i for i, lab in zip(judged, labels) if lab == 1]
        self.detected.update(ids[i] for i in malicious)
        return malicious

    def defend_after_aggregation(self, global_model: StateDict, ctx: RoundContext) -> StateDict:
        if not self.restart_now:
            return global_model
        self.restart_now = False
        self._forget()
        ctx.metrics["fldetector_restarted"] = True
        return {k: v.clone() for k, v in self.initial_model.items()}


def lbfgs_hvp(weight_diffs: torch.Tensor, update_diffs: torch.Tensor, v: torch.Tensor
              ) -> torch.Tensor:
    """H v by L-BFGS from the pairs (s_k, y_k) = rows of ``weight_diffs`` and ``update_diffs``
    (oldest first): FLDetector's Algorithm 2, the compact form of Byrd, Nocedal, Schnabel 1994,

        H v = sigma v - [sigma S, Y] M^-1 [sigma S^T v; Y^T v],
        M = [[sigma S^T S, L], [L^T, -D]],  S^T Y = L + D + upper part (L strictly lower),
        sigma = y_N^T s_N / s_N^T s_N,

    which is B_N v for the BFGS matrices B_k = B_(k-1) - B s s^T B / (s^T B s) + y y^T / (y^T s)
    started from B_0 = sigma I. Float64."""
    s = weight_diffs.to(torch.float64).numpy().T   # [d, N]
    y = update_diffs.to(torch.float64).numpy().T
    v = v.to(torch.float64).numpy()
    newest = float(s[:, -1] @ s[:, -1])
    if newest == 0:  # the model did not move: no curvature to estimate
        return torch.zeros(len(v), dtype=torch.float64)
    sy = s.T @ y
    sigma = float(y[:, -1] @ s[:, -1]) / newest
    lower = np.tril(sy, -1)
    m = np.block([[sigma * (s.T @ s), lower], [lower.T, -np.diag(np.diag(sy))]])
    q = np.concatenate([sigma * (s.T @ v), y.T @ v])
    try:
        p = np.linalg.solve(m, q)
    except np.linalg.LinAlgError:
        p = np.linalg.lstsq(m, q, rcond=None)[0]
    return torch.from_numpy(sigma * v - np.hstack([sigma * s, y]) @ p)
