"""DeepSight (``deepsight``)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict, keep_models
from ..metrics import report_excluded
from ..registry import register_defense
from ._common import (clip_towards, client_id, cosine_matrix, doc, finite_rows, keep_global,
                      output_layer, update_matrix)


@register_defense("deepsight", "deep_sight")
class DeepSightDefense(Defense):
    """DeepSight (Rieger, Nguyen, Miettinen, Sadeghi, NDSS 2022, "DeepSight: mitigating backdoor
    attacks in federated learning through deep model inspection"), Algorithm 1.

    Before aggregation, for the round's local models W_i and the global model G:

    1. NEUPs: the energy of output neuron k, e_ik = sum_p |Delta w_ikp| + |Delta b_ik| (the
       output layer's update), normalised as c_ik = e_ik^2 / sum_j e_ij^2;
    2. threshold exceedings TE_i = #{k : c_ik > max(0.01, 1/P) max_j c_ij} (P output neurons);
       a model is labelled suspicious when TE_i <= median(TE) / 2 (a backdoor concentrates its
       update on few labels);
    3. DDifs: for ``deepsight_seeds`` sets of ``deepsight_samples`` random inputs (uniform in
       [0, 1), the range of fedsec's images, of one sample's shape), DDif_ik = the mean over the
       inputs of p_i(k | x) / p_G(k | x) (softmax outputs);
    4. clustering: HDBSCAN (scikit-learn; ``deepsight_min_cluster_size``, a single cluster
       allowed) separately on the cosine distances of the output-layer bias updates, on the
       NEUPs and on each seed's DDifs; each clustering gives distances 0 (same cluster) / 1
       (different, or either point noise); their mean (the DDif seeds first averaged) is
       clustered again with HDBSCAN; a noise point is a cluster of its own;
    5. a cluster is accepted when less than ``deepsight_tau`` of its models are suspicious;
    6. the accepted models' updates are clipped to the median update norm of all the models
       (weight parameters), and the FL optimizer's aggregation averages them.

    DDifs need the model (``setting.model_factory``, which every experiment gives) and one input's
    shape (``deepsight_input_shape``, else the experiment's ``setting.input_shape``, else the
    clients' first batches when the round keeps them); a round without a model factory (a call outside an experiment) clusters on the other
    two statistics and says so in ``ctx.metrics["deepsight_ddifs"]``. When no model is accepted
    the round keeps the global model. A client whose update is not finite is excluded first.
    Reports ``ctx.metrics["deepsight_threshold_exceedings"]`` ({id: TE}),
    ``deepsight_suspicious`` (ids), ``deepsight_clusters`` ({id: final cluster, -1 noise}) and
    the rejected clients in ``ctx.metrics["excluded_clients"]``.
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION})

    @dataclass
    class Params:
        deepsight_tau: float = doc(1 / 3, "a cluster is accepted when less than this share of "
                                          "its models is suspicious", gt=0, le=1)
        deepsight_seeds: int = doc(3, "sets of random inputs for the DDifs", ge=1)
        deepsight_samples: int = doc(20000, "random inputs per set", ge=1)
        deepsight_input_shape: list[int] | None = doc(None, "shape of one input (e.g. [1, 28, "
                                                      "28]); default: the experiment's "
                                                      "data's, else the clients' first "
                                                      "batches when the round has them", ge=1)
        deepsight_min_cluster_size: int = doc(2, "HDBSCAN's smallest cluster", ge=2)
        deepsight_batch_size: int = doc(2000, "random inputs per forward pass", ge=1)

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        p = self.params
        weight, bias = output_layer(global_model)
        layer_keys = [weight] + ([bias] if bias is not None else [])
        updates = update_matrix(models, global_model)
        active = finite_rows(updates, ctx)
        if len(active) < 3:
            return keep_models(models, active, ctx)
        kept_models = [models[i] for i in active]
        ids = [client_id(ctx, i) for i in active]
        layer = update_matrix(kept_models, global_model, layer_keys)
        rows = global_model[weight].shape[0]
        neups = normalized_update_energies(layer[:, :-rows] if bias else layer, rows,
                                           layer[:, -rows:] if bias else None)
        te = threshold_exceedings(neups)
        suspicious = te <= np.median(te) / 2
        cosine = 1.0 - cosine_matrix(layer[:, -rows:] if bias else layer)
        statistics = [[cluster_distances(cosine, p.deepsight_min_cluster_size, True)],
                      [cluster_distances(neups, p.deepsight_min_cluster_size)]]
        ddifs = self._ddifs(kept_models, global_model, ctx)
        if ddifs is not None:
            statistics.append([cluster_distances(d, p.deepsight_min_cluster_size)
                               for d in ddifs])
        merged = np.mean([np.mean(group, axis=0) for group in statistics], axis=0)
        clusters = hdbscan_labels(merged, p.deepsight_min_cluster_size, precomputed=True)
        accepted = accepted_models(clusters, suspicious, p.deepsight_tau)
        ctx.metrics["deepsight_threshold_exceedings"] = dict(zip(ids, te.tolist()))
        ctx.metrics["deepsight_suspicious"] = [c for c, s in zip(ids, suspicious) if s]
        ctx.metrics["deepsight_clusters"] = dict(zip(ids, clusters.tolist()))
        report_excluded(ctx, [active[j] for j in range(len(active)) if not accepted[j]],
                        "deepsight: in a cluster of suspicious models")
        keep = [active[j] for j in range(len(active)) if accepted[j]]
        if not keep:
            return keep_global(global_model, ctx)
        bound = float(np.median(torch.linalg.vector_norm(updates[active], dim=1).numpy()))
        return [(count, clip_towards(state, global_model, bound)[0])
                for count, state in keep_models(models, keep, ctx)]

    def _ddifs(self, models: list[ClientModel], global_model: StateDict,
               ctx: RoundContext) -> np.ndarray | None:
        """[seeds, n, P] division differences, or None without a model factory."""
        p = self.params
        if self.setting.model_factory is None:
            warnings.warn("deepsight: no setting.model_factory, so no DDifs: the clustering uses "
                          "the NEUPs and the cosine distances only", stacklevel=2)
            ctx.metrics["deepsight_ddifs"] = "skipped: no model factory in this round"
            return None
        shape = self._input_shape(ctx)
        model = self.setting.model_factory()
        model.eval()
        out = []
        for seed in range(p.deepsight_seeds):
            gen = torch.Generator().manual_seed(seed)
            inputs = torch.rand((p.deepsight_samples, *shape), generator=gen)
            model.load_state_dict(global_model)
            # floored so that a probability that underflows to 0 gives a large ratio, not inf
            reference = probabilities(model, inputs, p.deepsight_batch_size).clamp_min(
                torch.finfo(torch.float64).tiny)
            per_model = []
            for _, state in models:
                model.load_state_dict(state)
                ratio = probabilities(model, inputs, p.deepsight_batch_size) / reference
                per_model.append(ratio.mean(dim=0).numpy())
            out.append(np.stack(per_model))
        ctx.metrics["deepsight_ddifs"] = "computed"
        return np.stack(out)

    def _input_shape(self, ctx: RoundContext) -> tuple[int, ...]:
        if self.params.deepsight_input_shape is not None:
            return tuple(self.params.deepsight_input_shape)
        if self.setting.input_shape is not None:
            return tuple(self.setting.input_shape)
        for features, _ in (ctx.client_batches or {}).values():
            return tuple(features.shape[1:])
        raise ValueError("deepsight_input_shape is not set, and neither the experiment's data "
                         "(setting.input_shape) nor the round's client batches give it: set deepsight_input_shape to one input's shape, "
                         "e.g. [1, 28, 28] for the digits")


def probabilities(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int
                  ) -> torch.Tensor:
    """softmax(model(x)) for the rows of ``inputs``, float64, on the CPU."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([torch.softmax(model(inputs[s:s + batch_size].to(device)).to(
            torch.float64), dim=-1).cpu() for s in range(0, len(inputs), batch_size)])


def normalized_update_energies(weight_update: torch.Tensor, rows: int,
                               bias_update: torch.Tensor | None) -> np.ndarray:
    """NEUPs [n, P] from the flattened output-layer weight updates [n, P * fan_in] and bias
    updates [n, P] (or None): c_k = e_k^2 / sum_j e_j^2, e_k = sum |Delta w_k.| + |Delta b_k|
    (all 1/P for a zero update)."""
    energy = weight_update.reshape(len(weight_update), rows, -1).abs().sum(dim=2)
    if bias_update is not None:
        energy = energy + bias_update.abs()
    squared = (energy * energy).numpy()
    total = squared.sum(axis=1, keepdims=True)
    return np.divide(squared, total, out=np.full_like(squared, 1.0 / rows), where=total > 0)


def threshold_exceedings(neups: np.ndarray) -> np.ndarray:
    """TE_i = #{k : c_ik > max(0.01, 1/P) max_j c_ij}."""
    bound = max(0.01, 1.0 / neups.shape[1]) * neups.max(axis=1, keepdims=True)
    return (neups > bound).sum(axis=1)


def hdbscan_labels(data: np.ndarray, min_cluster_size: int, precomputed: bool = False
                   ) -> np.ndarray:
    """HDBSCAN cluster labels (-1: noise), a single cluster allowed."""
    from sklearn.cluster import HDBSCAN

    fit = HDBSCAN(min_cluster_size=min_cluster_size, allow_single_cluster=True, copy=True,
                  metric="precomputed" if precomputed else "euclidean")
    return fit.fit_predict(data)


def cluster_distances(data: np.ndarray, min_cluster_size: int, precomputed: bool = False
                      ) -> np.ndarray:
    """n x n: 0 for two points of the same HDBSCAN cluster (and on the diagonal), else 1; a
    noise point is alone."""
    labels = hdbscan_labels(data, min_cluster_size, precomputed)
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] != -1)
    np.fill_diagonal(same, True)
    return np.where(same, 0.0, 1.0)


def accepted_models(clusters: np.ndarray, suspicious: np.ndarray, tau: float) -> np.ndarray:
    """Whether each model's cluster (a noise point alone) has less than ``tau`` of suspicious
    models."""
    accepted = np.empty(len(clusters), dtype=bool)
    for i, label in enumerate(clusters):
        members = [i] if label == -1 else np.flatnonzero(clusters == label)
        accepted[i] = suspicious[members].mean() < tau
    return accepted
