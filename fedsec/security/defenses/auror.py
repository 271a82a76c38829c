"""Auror (``auror``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict, keep_models
from ..metrics import report_excluded
from ..registry import register_defense
from ._common import client_id, doc, finite_rows, kmeans_1d, update_matrix


@register_defense("auror")
class AurorDefense(Defense):
    """Auror (Shen, Tople, Saxena, ACSAC 2016, "Auror: defending against poisoning attacks in
    collaborative deep learning systems").

    Before aggregation, on the updates u_i = w_i - w_g (every weight-parameter coordinate is a
    feature):

    1. each feature's n values are split into two clusters by k-means (exact in one dimension,
       ``kmeans_1d``); the feature is indicative when the distance between the two cluster
       centers exceeds ``auror_alpha``;
    2. for each indicative feature, the clients of the smaller cluster are suspicious for it
       (none on a tie);
    3. a client suspicious for at least ``auror_tau`` of the indicative features is malicious
       and excluded; the FL optimizer's aggregation averages the others.

    No indicative feature: nobody is excluded. ``auror_alpha`` is in the units of the updates
    (it depends on the learning rate and local steps; the paper picks it per dataset). A client
    whose update is not finite is excluded first. Reports ``ctx.metrics["auror_indicative"]``
    (count), ``ctx.metrics["auror_suspicion"]`` ({id: share of indicative features}) and the
    excluded clients in ``ctx.metrics["excluded_clients"]``.
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION})

    @dataclass
    class Params:
        auror_alpha: float = doc(0.02, "smallest distance between a feature's two cluster "
                                       "centers that makes it indicative", gt=0)
        auror_tau: float = doc(0.5, "share of the indicative features in whose minority "
                                    "cluster a client must be to be malicious", gt=0, le=1)

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        updates = update_matrix(models, global_model)
        active = finite_rows(updates, ctx)
        if len(active) < 3:
            return keep_models(models, active, ctx)
        suspicion, indicative = auror_suspicion(updates[active].numpy(), self.params.auror_alpha)
        ctx.metrics["auror_indicative"] = indicative
        ctx.metrics["auror_suspicion"] = {client_id(ctx, i): float(s)
                                          for i, s in zip(active, suspicion)}
        malicious = [i for i, s in zip(active, suspicion)
                     if indicative and s >= self.params.auror_tau]
        report_excluded(ctx, malicious, "auror: in the minority cluster of the indicative "
                                        "features")
        return keep_models(models, [i for i in active if i not in malicious], ctx)


def auror_suspicion(updates: np.ndarray, alpha: float) -> tuple[np.ndarray, int]:
    """Per client (row), the share of the indicative features (columns whose two 1-D k-means
    centers are more than ``alpha`` apart) in whose smaller cluster it lies; and their count."""
    labels, _ = kmeans_1d(updates, 2)
    high = labels == 1
    size_high = high.sum(axis=0)
    size_low = len(updates) - size_high
    centre_high = np.where(high, updates, 0.0).sum(axis=0) / np.maximum(size_high, 1)
    centre_low = np.where(~high, updates, 0.0).sum(axis=0) / np.maximum(size_low, 1)
    indicative = np.abs(centre_high - centre_low) > alpha
    minority = np.where(size_high < size_low, high, np.where(size_low < size_high, ~high, False))
    count = int(indicative.sum())
    if count == 0:
        return np.zeros(len(updates)), 0
    return (minority & indicative).sum(axis=1) / count, count
