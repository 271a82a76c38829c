"""RFLBAT (``rflbat``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict, keep_models
from ..metrics import report_excluded
from ..registry import register_defense
from ._common import cosine_matrix, doc, finite_rows, gap_statistic, kmeans, update_matrix


@register_defense("rflbat")
class RFLBATDefense(Defense):
    """RFLBAT (Wang, Zhai, Zhan, Xia 2022, "RFLBAT: a robust federated learning algorithm
    against backdoor attack").

    Before aggregation, on the updates u_i = w_i - w_g (weight parameters):

    1. PCA to two dimensions: the points x_i are the updates' scores on the top two principal
       components, from the eigen-decomposition of the centered n x n Gram matrix
       (x = V_2 diag(sqrt(lambda_2)); no d x d covariance);
    2. first outlier removal: with e_i = sum_j ||x_i - x_j||, keep e_i < ``rflbat_eps1`` *
       median(e);
    3. k-means (scikit-learn, seeded from the round) of the kept points, k by the gap statistic
       (``gap_statistic``, k <= ``rflbat_k_max``, ``rflbat_gap_references`` reference sets);
    4. cluster selection: for each cluster of two or more clients, the median over its members
       of their mean cosine similarity (of the full updates) to the cluster's members; the
       cluster with the smallest is kept (backdoor updates are alike);
    5. second outlier removal inside it, as step 2 with ``rflbat_eps2``.

    The FL optimizer's aggregation averages the clients left. A client whose update is not
    finite is excluded first. Reports ``ctx.metrics["rflbat_clusters"]`` (k) and the excluded
    clients (with the step that dropped them) in ``ctx.metrics["excluded_clients"]``.
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION})

    @dataclass
    class Params:
        rflbat_eps1: float = doc(10.0, "first outlier removal: largest distance sum, in "
                                       "medians", gt=0)
        rflbat_eps2: float = doc(4.0, "second outlier removal: largest distance sum, in "
                                      "medians", gt=0)
        rflbat_k_max: int = doc(9, "most clusters the gap statistic may choose", ge=1)
        rflbat_gap_references: int = doc(5, "uniform reference sets of the gap statistic",
                                         ge=1)

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        p = self.params
        updates = update_matrix(models, global_model)
        active = finite_rows(updates, ctx)
        u = updates[active]
        points = pca_2d(u)
        first = [active[i] for i in distance_sum_inliers(points, p.rflbat_eps1)]
        report_excluded(ctx, [i for i in active if i not in first],
                        "rflbat: first outlier removal")
        position = {c: i for i, c in enumerate(active)}
        chosen = first
        if len(first) >= 3:
            kept_points = points[[position[c] for c in first]]
            seed = int(ctx.rng.integers(2 ** 31))
            k, _, _ = gap_statistic(kept_points, p.rflbat_k_max, p.rflbat_gap_references,
                                    ctx.rng, lambda sets, k: np.array(
                                        [kmeans(s, k, seed)[1] for s in sets]))
            labels, _ = kmeans(kept_points, k, seed) if k > 1 else (np.zeros(len(first)), 0.0)
            ctx.metrics["rflbat_clusters"] = int(k)
            members = [[c for c, lab in zip(first, labels) if lab == j] for j in range(k)]
            chosen = min(members, key=lambda m: cluster_similarity(u[[position[c] for c in m]]))
            report_excluded(ctx, [c for c in first if c not in chosen],
                            "rflbat: not in the selected cluster")
        second = [chosen[i] for i in distance_sum_inliers(
            points[[position[c] for c in chosen]], p.rflbat_eps2)]
        report_excluded(ctx, [c for c in chosen if c not in second],
                        "rflbat: second outlier removal")
        return keep_models(models, second, ctx)


def pca_2d(updates: torch.Tensor) -> np.ndarray:
    """The rows' scores on their top two principal components ([n, 2]; fewer columns when the
    centered rows span less), from the centered Gram matrix."""
    centered = updates - updates.mean(dim=0, keepdim=True)
    values, vectors = np.linalg.eigh((centered @ centered.T).numpy())
    top = np.argsort(values)[::-1][:2]
    top = [j for j in top if values[j] > 0]
    return vectors[:, top] * np.sqrt(values[top])


def distance_sum_inliers(points: np.ndarray, eps: float) -> list[int]:
    """Positions whose sum of Euclidean distances to the other points is below eps times the
    median sum (all of them when every sum is 0)."""
    if len(points) == 0:
        return []
    diff = points[:, None, :] - points[None, :, :]
    sums = np.sqrt((diff * diff).sum(axis=2)).sum(axis=1)
    bound = eps * np.median(sums)
    if bound == 0:
        return list(range(len(points)))
    return [i for i, s in enumerate(sums) if s < bound]


def cluster_similarity(updates: torch.Tensor) -> float:
    """The median over the rows of their mean cosine similarity to the rows (themselves
    included); infinite for a single row, so a lone client is never the selected cluster."""
    if len(updates) < 2:
        return float("inf")
    return float(np.median(cosine_matrix(updates).mean(axis=1)))
