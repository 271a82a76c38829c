"""Label leakage from gradients: LLG (Wainakh, Ventola, Müßig, Keim, Garcia Cordero, Zimmer,
Grube, Kersting, Mühlhäuser, "User-level label leakage from gradients in federated
learning", PoPETs 2022), the analytic batch-label recovery that FedML's
``revealing_labels_from_gradients`` module is after."""
from __future__ import annotations

import torch

from ..base import RoundContext
from ..registry import register_attack
from ._reconstruction import ObservedClient, ReconstructionAttack, label_accuracy, output_layer


def llg_labels(output_update: torch.Tensor, count: int) -> list[int]:
    """The ``count`` labels (sorted, repeats allowed) that LLG reads from the update of the
    output layer's weight, [classes, features] (its gradient, or any positive multiple: the
    update of plain SGD steps).

    With softmax cross-entropy, the gradient of class c's row is sum_i (p_ic - y_ic) h_i / B
    for the samples' features h_i: summed over the features, g_c. LLG (Wainakh et al. 2022,
    Sec. 4.2):
      1. every class with g_c < 0 is in the batch: predicted once, and g_c -= m, where the
         impact of one occurrence is estimated as m = (sum of the negative g_c / B)(1 + 1/C);
      2. the remaining B - (number of negatives) labels are taken one at a time, each time the
         class of least g_c (then g_c -= m).

    When it is exact: if the features are non-negative (ReLU or sigmoid outputs, or pixels
    fed to a linear model), g_c > 0 for every class absent from the batch (p_ic > 0), so step
    1 never names an absent class. If moreover the labels are distinct and every present
    class has g_c < 0 - guaranteed when each sample i of class c has
    (1 - p_ic) |h_i|_1 > sum_{j != i} p_jc |h_j|_1, i.e. when the model is not yet confident
    (p_ic near 1/C, batch size below the class count) - step 1 alone returns exactly the
    batch's labels. Repeated labels rest on the estimate m (step 2), a heuristic: their count
    can be off, most often on a trained model. Features that can be negative (tanh, a
    normalised input to a linear model) void the sign argument (should more than B classes
    come out negative, the B most negative are kept).
    """
    if output_update.dim() != 2:
        raise ValueError(f"llg_labels needs the output layer's weight update [classes, "
                         f"features]; got shape {tuple(output_update.shape)}")
    if count < 1:
        raise ValueError(f"llg_labels: count={count} must be >= 1")
    g = output_update.detach().to(torch.float64).sum(-1).cpu()
    classes = g.shape[0]
    negative = [int(c) for c in torch.argsort(g) if g[c] < 0][:count]
    impact = float(g[g < 0].sum()) / count * (1 + 1 / classes)
    labels = list(negative)
    g[negative] -= impact
    while len(labels) < count:
        c = int(torch.argmin(g))
        labels.append(c)
        g[c] -= impact
    return sorted(labels)


@register_attack("revealing_labels_from_gradients", "llg", "label_leakage")
class RevealingLabelsAttack(ReconstructionAttack):
    """Label leakage at the server (observes only): the labels the client at position
    ``attack_client_index`` trained on, read from its update of the output layer by LLG
    (Wainakh et al. 2022; see ``llg_labels`` for the rule and when it is exact).

    The server knows the client's sample count n; the update sums the gradients of all its
    steps, so LLG predicts n labels: the client's whole local label multiset (its first batch
    when its data is one batch). Reported in ``ctx.metrics["revealing_labels_from_gradients"]``:
    client id, round and the labels; when ``ctx.client_batches`` holds all n samples (data of
    one batch), the label accuracy too (the share of true labels the predicted multiset
    contains). Needs a model whose last trainable matrix is its output layer, softmax
    cross-entropy, and plain SGD (momentum or Adam do not change the signs, but then the
    counts are not what the rule assumes).

    FedML's module of this name follows Dang et al. (NeurIPS 2021, "Revealing and protecting
    labels in distributed training"), whose SVD and linear programs recover the set of labels
    but not how often each occurs; LLG gives counts, which a batch reconstruction needs.
    """

    def reconstruct(self, seen: ObservedClient, ctx: RoundContext) -> None:
        labels = llg_labels(output_layer(seen), seen.sample_count)
        report = {"client_id": seen.client_id, "round": ctx.round_index, "labels": labels}
        if seen.truth is not None and len(seen.truth[1]) == seen.sample_count:
            report["label_accuracy"] = label_accuracy(labels, seen.truth[1].tolist())
        ctx.metrics[self.name] = report
