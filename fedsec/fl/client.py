"""A client's local training: from the global model, some epochs of mini-batch SGD (or Adam)
on its own data, optionally with FedProx's proximal term (Li et al. 2020).

Everything random (the batch order, dropout) comes from the seed the caller passes, derived
from the experiment's seed, the round and the client, so a round gives the same local models
whether the run went straight through or was resumed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..security import StateDict


@dataclass(frozen=True)
class LocalTraining:
    """How clients train (from train_args)."""

    epochs: int
    batch_size: int
    optimizer: str          # "sgd" or "adam"
    learning_rate: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0  # FedProx's mu; 0 is plain local training


@dataclass
class LocalResult:
    num_samples: int
    state: StateDict         # the local model (fresh tensors)
    steps: int               # local optimizer steps (tau, for FedNova)
    train_loss: float        # mean of the steps' losses, proximal term excluded
    first_batch: tuple[torch.Tensor, torch.Tensor] | None  # what the first step trained on


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; labels [N] for classifiers, [N, L] for a language model whose
    logits are [N, L, V]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def train_local(model: torch.nn.Module, global_state: StateDict, features: torch.Tensor,
                labels: torch.Tensor, how: LocalTraining, seed: int) -> LocalResult:
    """Train ``model`` (its weights are first set to ``global_state``) on the client's data."""
    model.load_state_dict(global_state)
    model.train()
    torch.manual_seed(seed)  # dropout and any other random layer
    order = torch.Generator().manual_seed(seed)
    if how.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=how.learning_rate, momentum=how.momentum,
                              weight_decay=how.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=how.learning_rate,
                               weight_decay=how.weight_decay)
    # only the weights that train: a frozen one never leaves its anchor (and a frozen LLM base
    # would be copied whole)
    anchors = ([(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]
               if how.proximal_mu > 0 else None)
    n = features.shape[0]
    steps, first = 0, None
    # summed on the device, so a GPU is not synchronised every step
    loss_sum = torch.zeros((), dtype=torch.float64, device=features.device)
    for _ in range(how.epochs):
        perm = torch.randperm(n, generator=order).to(features.device)
        for start in range(0, n, how.batch_size):
            batch = perm[start:start + how.batch_size]
            # index_select copies (x, y are the batch's own), faster than features[batch]
            x, y = features.index_select(0, batch), labels.index_select(0, batch)
            if first is None:
                first = (x, y)
            loss = classification_loss(model(x), y)
            total = loss
            if anchors is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in anchors)
                total = loss + 0.5 * how.proximal_mu * prox
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            steps += 1
            loss_sum += loss.detach()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return LocalResult(n, state, steps, float(loss_sum) / max(steps, 1), first)


def sgd_normalizer(steps: int, learning_rate: float, momentum: float = 0.0,
                   proximal_mu: float = 0.0) -> float:
    """FedNova's ||a_i||_1 (Wang et al. 2020): after ``steps`` local steps the model moved by
    -lr * sum_k a_k g_k for the steps' gradients g_k. torch's SGD is the linear, time-invariant
    recursion (buffer b <- rho b + g + mu d, displacement d <- d - lr b), so a_k is its
    response, ``steps - k`` steps after a unit gradient, and the sum runs over one impulse
    response. This gives the paper's closed forms: tau for plain SGD,
    (tau - rho (1 - rho^tau) / (1 - rho)) / (1 - rho) with momentum rho, and
    (1 - (1 - lr mu)^tau) / (lr mu) with FedProx's mu."""
    total, d, b = 0.0, 0.0, 0.0
    for j in range(steps):
        g = (1.0 if j == 0 else 0.0) + proximal_mu * d
        b = momentum * b + g
        d -= learning_rate * b
        total += -d / learning_rate
    return total
