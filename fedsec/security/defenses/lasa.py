"""LASA: layer-adaptive sparsified model aggregation (``lasa``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import fedsec

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict
from ..metrics import report_excluded
from ..registry import register_defense
from ._common import (add_update, client_id, doc, finite_rows, key_slices, states, update_matrix,
                      weight_keys)


@register_defense("lasa", "layer_adaptive_sparsified_aggregation")
class LASADefense(Defense):
    """LASA (Xu, Zhang, Hu, WACV 2025, "Achieving Byzantine-resilient federated learning via
    layer-adaptive sparsified model aggregation"), as in the authors' code.

    On the updates u_i = w_i - w_g (weight parameters) of the round's clients:

    1. clipping: u_i <- u_i min(1, median_j ||u_j|| / ||u_i||);
    2. pre-aggregation sparsification: each client keeps the coordinates of its weight
       matrices (entries with 2 or more dimensions) whose |u| exceeds its own k-th largest,
       k = floor((1 - ``lasa_sparsity``) * their size), the others set to 0 (biases and other
       1-D entries are kept dense);
    3. per layer (state_dict entry) l, two median-based z-scores over the clients,
       MZ(x_i) = |x_i - median(x)| / std(x), of the sparsified layer update's norm ||u_i^l||
       (magnitude) and of its sign purity rho_i^l = (1 + sum sgn(u_i^l) / sum |sgn(u_i^l)|) / 2
       (direction; 1/2 for an all-zero layer); the layer keeps the clients with
       MZ(norm) < ``lasa_lambda_n`` and MZ(rho) < ``lasa_lambda_s``, every client when none
       passes both; a statistic equal for every client (std 0) passes them all (the authors'
       code divides 0 by 0 there and so keeps every client);
    4. the layer's update is the plain mean of the kept clients' clipped sparsified updates.

    Non-weight entries (BatchNorm running statistics, counters) are ``fedsec.mean``'s of the
    round (sample-count weighted). A client whose update is not finite is excluded first.
    Reports ``ctx.metrics["lasa_kept"]`` ({layer: [ids]}) and, in
    ``ctx.metrics["excluded_clients"]``, the clients that no layer kept.
    """

    stages = frozenset({Stage.ON_AGGREGATION})

    @dataclass
    class Params:
        lasa_sparsity: float = doc(0.3, "fraction of each client's weight-matrix coordinates "
                                        "set to 0 (smallest magnitudes first)", ge=0, lt=1)
        lasa_lambda_n: float = doc(1.0, "largest MZ-score of a layer's update norm", gt=0)
        lasa_lambda_s: float = doc(1.0, "largest MZ-score of a layer's sign purity", gt=0)

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        p = self.params
        keys = weight_keys(global_model)
        updates = update_matrix(models, global_model, keys)
        active = finite_rows(updates, ctx)
        u = clip_to_median_norm(updates[active])
        slices = key_slices(global_model, keys)
        matrices = [slices[k] for k in keys if global_model[k].dim() >= 2]
        u = sparsify(u, matrices, p.lasa_sparsity)
        aggregate = torch.zeros(updates.shape[1], dtype=torch.float64)
        kept_by_layer, ever_kept = {}, set()
        for key, where in slices.items():
            layer = u[:, where]
            kept = layer_filter(layer, p.lasa_lambda_n, p.lasa_lambda_s)
            aggregate[where] = layer[kept].mean(dim=0)
            kept_by_layer[key] = [client_id(ctx, active[i]) for i in kept]
            ever_kept.update(active[i] for i in kept)
        ctx.metrics["lasa_kept"] = kept_by_layer
        report_excluded(ctx, [i for i in active if i not in ever_kept],
                        "lasa: kept by no layer")
        others = fedsec.mean([states(models)[i] for i in active],
                             weights=[models[i][0] for i in active])
        return add_update(global_model, aggregate, keys, others)


def clip_to_median_norm(updates: torch.Tensor) -> torch.Tensor:
    """Each row scaled to norm at most the median of the rows' norms."""
    norms = torch.linalg.vector_norm(updates, dim=1)
    bound = float(np.median(norms.numpy()))
    scale = torch.where(norms > bound, bound / torch.where(norms > 0, norms, 1.0),
                        torch.ones_like(norms))
    return updates * scale[:, None]


def sparsify(updates: torch.Tensor, matrices: list[slice], sparsity: float) -> torch.Tensor:
    """Per row, the coordinates in ``matrices`` whose magnitude is at most the row's k-th
    largest there (k = floor((1 - sparsity) * their count)) set to 0; the rest kept."""
    if sparsity == 0 or not matrices:
        return updates
    where = torch.cat([torch.arange(s.start, s.stop) for s in matrices])
    magnitudes = updates[:, where].abs()
    k = int(len(where) * (1 - sparsity))
    if k == 0:
        out = updates.clone()
        out[:, where] = 0
        return out
    kth = torch.topk(magnitudes, k, dim=1).values[:, -1:]
    out = updates.clone()
    out[:, where] = torch.where(magnitudes > kth, updates[:, where], torch.zeros_like(magnitudes))
    return out


def mz_scores(values: np.ndarray) -> np.ndarray:
    """Median-based z-scores |x - median(x)| / std(x) (population std); 0 when std is 0."""
    std = values.std()
    if std == 0:
        return np.zeros_like(values)
    return np.abs(values - np.median(values)) / std


def sign_purity(layer: torch.Tensor) -> np.ndarray:
    """(1 + sum sgn / sum |sgn|) / 2 of each row: its fraction of positive entries among the
    non-zero ones (1/2 for an all-zero row)."""
    signs = torch.sign(layer)
    nonzero = signs.abs().sum(dim=1)
    ratio = torch.where(nonzero > 0, signs.sum(dim=1) / torch.where(nonzero > 0, nonzero, 1.0),
                        torch.zeros_like(nonzero))
    return ((1 + ratio) / 2).numpy()


def layer_filter(layer: torch.Tensor, lambda_n: float, lambda_s: float) -> list[int]:
    """The rows of one layer's updates that pass LASA's magnitude and direction filters (every
    row when none passes both)."""
    norms = torch.linalg.vector_norm(layer, dim=1).numpy()
    passed = (mz_scores(norms) < lambda_n) & (mz_scores(sign_purity(layer)) < lambda_s)
    kept = np.flatnonzero(passed).tolist()
    return kept if kept else list(range(len(layer)))
