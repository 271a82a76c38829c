"""Clients of one round trained together: the same local training as ``train_local``, one
optimizer step for all of them at a time.

Each client's parameters are one row of a stacked tensor ([G, *shape] per parameter); the model
runs on every row at once through ``torch.func.vmap`` over ``functional_call``, and the sum of
the clients' losses is differentiated once (the clients are independent, so row i of the
gradient is client i's own gradient). torch's SGD and Adam are elementwise, so one optimizer on
the stacked tensors takes each client's own step; Adam's step count is shared, which is exact
because every client still training has taken the same number of steps.

What stays each client's own, exactly as in the sequential path:
- its batch order: the same ``torch.Generator`` seeded with the client's seed draws one
  permutation per epoch, and its batches are cut from it in the same sizes (the last one of an
  epoch smaller); a short batch is padded, and the padding is masked out of the loss;
- its number of steps: a client with fewer samples takes fewer steps. Its row keeps moving
  afterwards (weight decay, momentum, Adam), but its model is taken when its last step is done;
- its loss: the mean over its batch's scored samples (a language model's ignored positions
  excluded), FedProx's term mu/2 ||w - w_global||^2 added for the gradient only.

Results equal the sequential path's to float rounding (sums are taken in another order).
Models with buffers (batch norm's running statistics), active dropout or recurrent layers are
trained one client at a time (``batching_obstacle`` says why).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from ..security import StateDict
from ..security.base import IGNORE_LABEL
from .client import LocalResult, LocalTraining

# Stacked parameters, their gradients and two optimizer buffers per client, in bytes: above
# this a round's clients are trained in several groups.
GROUP_MEMORY_BUDGET = 1 << 30


@dataclass(frozen=True)
class ClientData:
    """A client's data and seed. ``pool``: (features, labels) of many clients, of which this
    client's are the rows from ``start`` on, so a group reads the pool rather than a
    concatenated copy of its clients' data."""

    features: torch.Tensor
    labels: torch.Tensor
    seed: int
    pool: tuple[torch.Tensor, torch.Tensor] | None = None
    start: int = 0


def batching_obstacle(model: nn.Module) -> str | None:
    """Why ``model``'s clients cannot be trained together (None: they can)."""
    if next(model.buffers(), None) is not None:
        return "it has buffers (e.g. batch norm's running statistics), updated per client"
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            return "it has active dropout, whose random masks follow each client's own stream"
        if isinstance(module, nn.RNNBase):
            return "recurrent layers have no batching rule under torch.func.vmap"
    return None


def batching_pays(model: nn.Module) -> bool:
    """Whether ``client_batching: auto`` trains ``model``'s clients together: where it can and
    the model's class says batching was measured to pay (``client_batching_pays``). On the CPU
    it did for logistic regression and not elsewhere: a vmapped convolution is a grouped one,
    2-3x slower than the clients' separate ones, and attention has no vmap batching rule, so
    the transformer's batched steps took as long as its sequential ones."""
    return batching_obstacle(model) is None and getattr(type(model), "client_batching_pays",
                                                        False)


def group_size(model: nn.Module) -> int:
    """How many clients one group trains at once within GROUP_MEMORY_BUDGET."""
    per_client = 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    return max(1, GROUP_MEMORY_BUDGET // max(per_client, 1))


def train_batched(model: nn.Module, global_state: StateDict, clients: list[ClientData],
                  how: LocalTraining, *, keep_first_batch: bool = True) -> list[LocalResult]:
    """``train_local`` for each of ``clients`` (same seeds, same results to rounding), in
    groups of at most ``group_size(model)``; ``keep_first_batch=False`` leaves
    ``first_batch`` None (it is a copy, needed only to score a reconstruction attack)."""
    results: list[LocalResult | None] = [
        LocalResult(0, {k: v.detach().clone() for k, v in global_state.items()}, 0, 0.0, None)
        if c.features.shape[0] == 0 else None for c in clients]  # no data: no step
    training = [i for i, r in enumerate(results) if r is None]
    size = group_size(model)
    for start in range(0, len(training), size):
        group = training[start:start + size]
        for i, result in zip(group, _train_group(model, global_state,
                                                 [clients[i] for i in group], how,
                                                 keep_first_batch)):
            results[i] = result
    return results


def _train_group(model: nn.Module, global_state: StateDict, clients: list[ClientData],
                 how: LocalTraining, keep_first_batch: bool) -> list[LocalResult]:
    model.train()
    schedules = [_batches(c, how) for c in clients]
    # Longest-training clients first, so the clients still training at a step are a prefix of
    # the group and each step runs on exactly those.
    order = sorted(range(len(clients)), key=lambda i: -len(schedules[i]))
    steps = [len(schedules[i]) for i in order]
    pool = clients[0].pool
    if pool is not None and all(c.pool is pool for c in clients):
        (features, labels), starts = pool, [clients[i].start for i in order]
    else:
        features = torch.cat([clients[i].features for i in order])
        labels = torch.cat([clients[i].labels for i in order])
        starts = [0, *itertools.accumulate(clients[i].features.shape[0] for i in order)][:-1]
    rows, scored = _step_rows([schedules[i] for i in order], starts, how.batch_size,
                              features.device)
    names = [name for name, _ in model.named_parameters()]
    stacked = {name: global_state[name].detach().unsqueeze(0)
               .repeat(len(clients), *([1] * global_state[name].dim())).requires_grad_()
               for name in names}
    opt = _StackedOptimizer(list(stacked.values()), how)
    loss_sums = torch.zeros(len(clients), dtype=torch.float64, device=features.device)
    finished: list[StateDict | None] = [None] * len(clients)

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (x,))

    for step in range(steps[0]):
        active = sum(n > step for n in steps)
        params = {name: p[:active] for name, p in stacked.items()}
        batch = rows[step, :active]
        losses = _client_losses(vmap(forward)(params, _take(features, batch)),
                                _take(labels, batch), scored[step, :active])
        total = losses.sum()
        if how.proximal_mu > 0:
            total = total + 0.5 * how.proximal_mu * sum(
                ((p - global_state[name]) ** 2).sum() for name, p in params.items())
        opt.zero_grad()
        total.backward()
        opt.step()  # rows past ``active`` move too (decay, momentum) but are already taken
        loss_sums[:active] += losses.detach()
        for position in range(active):
            if steps[position] == step + 1:
                finished[order[position]] = {
                    **global_state,
                    **{name: p[position].detach().clone() for name, p in stacked.items()}}
    sums = loss_sums.tolist()
    mean_loss = {i: sums[position] / steps[position] for position, i in enumerate(order)}
    return [LocalResult(c.features.shape[0], finished[i], len(schedules[i]), mean_loss[i],
                        (c.features[schedules[i][0]], c.labels[schedules[i][0]])
                        if keep_first_batch else None)
            for i, c in enumerate(clients)]


def _take(data: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``data[rows]`` for a [G, B] index: index_select, 5x faster than advanced indexing here."""
    return torch.index_select(data, 0, rows.reshape(-1)).view(*rows.shape, *data.shape[1:])


class _StackedOptimizer:
    """torch's SGD or Adam step on the stacked parameters, through the functions
    ``torch.optim.SGD.step`` and ``Adam.step`` call (``torch.optim.sgd.sgd``,
    ``torch.optim.adam.adam``) with the classes' defaults: the classes' constructors import
    TorchDynamo, 1.5 s of a run's start-up here, and the functions do not."""

    def __init__(self, params: list[torch.Tensor], how: LocalTraining):
        self.params, self.how = params, how
        if how.optimizer == "sgd":
            self.momentum: list[torch.Tensor | None] = [None] * len(params)  # sgd fills them
        else:
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]
            self.steps = [torch.tensor(0.0) for _ in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        how = self.how
        if how.optimizer == "sgd":
            sgd(self.params, grads, self.momentum, weight_decay=how.weight_decay,
                momentum=how.momentum, lr=how.learning_rate, dampening=0.0, nesterov=False,
                maximize=False)
        else:
            adam(self.params, grads, self.exp_avg, self.exp_avg_sq, [], self.steps,
                 amsgrad=False, beta1=0.9, beta2=0.999, lr=how.learning_rate,
                 weight_decay=how.weight_decay, eps=1e-8, maximize=False)


def _batches(client: ClientData, how: LocalTraining) -> list[torch.Tensor]:
    """The client's batches (sample indices) in the order ``train_local`` trains on them."""
    order = torch.Generator().manual_seed(client.seed)
    n = client.features.shape[0]
    out = []
    for _ in range(how.epochs):
        perm = torch.randperm(n, generator=order).to(client.features.device)
        out += list(perm.split(how.batch_size))
    return out


def _step_rows(schedules: list[list[torch.Tensor]], starts: list[int], batch_size: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the group's data (client g's from ``starts[g]`` on), [steps, G, B], that each
    client's batch of each step reads, and which of them are scored, [steps, G, B]: a short
    batch is padded with unscored rows, and a client past its last step reads unscored rows of
    its own. Built on the host in one array (a few operations per client, not per step)."""
    total_steps = max(len(s) for s in schedules)
    rows = np.zeros((len(schedules), total_steps, batch_size), dtype=np.int64)
    scored = np.zeros((len(schedules), total_steps, batch_size), dtype=bool)
    for g, (schedule, offset) in enumerate(zip(schedules, starts)):
        padded = np.zeros((len(schedule), batch_size), dtype=np.int64)
        valid = np.zeros((len(schedule), batch_size), dtype=bool)
        sizes = np.array([len(b) for b in schedule])
        valid[np.arange(batch_size) < sizes[:, None]] = True
        padded[valid] = torch.cat(schedule).cpu().numpy()
        rows[g, :len(schedule)] = padded + offset
        rows[g, len(schedule):] = offset
        scored[g, :len(schedule)] = valid
    return (torch.from_numpy(rows.transpose(1, 0, 2).copy()).to(device),
            torch.from_numpy(scored.transpose(1, 0, 2).copy()).to(device))


def _client_losses(logits: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor
                   ) -> torch.Tensor:
    """Each client's mean cross-entropy over its scored samples (and, for a language model,
    its non-ignored positions), as ``classification_loss`` takes it: [G]."""
    per_entry = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                reduction="none").reshape(labels.shape)
    counted = (labels != IGNORE_LABEL) & scored.reshape(*scored.shape,
                                                        *([1] * (labels.dim() - 2)))
    per_entry = torch.where(counted, per_entry, 0.0)
    dims = tuple(range(1, labels.dim()))
    return per_entry.sum(dims) / counted.sum(dims).clamp(min=1)
