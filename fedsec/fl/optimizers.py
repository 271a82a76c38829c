"""Federated optimizers: how the server turns the clients' local models into the next global
model, around the security pipeline (which decides *which* average: plain or robust).

Each optimizer has three hooks:
- ``proximal_mu``: the clients' proximal term (FedProx);
- ``uploads(results, global_model)``: the (sample count, model) pairs the server sees, from the
  clients' local results (FedNova normalises them here);
- ``step(global_model, aggregate)``: the new global model from the aggregate the pipeline
  produced (FedOpt's adaptive server step on the pseudo-gradient).
Only weight parameters take a server step; BatchNorm statistics and integer buffers are taken
from the aggregate as they are.
"""
from __future__ import annotations

from typing import Any

import torch

from ..security import ClientModel, StateDict
from ..security.state import is_weight_param
from .client import LocalResult, sgd_normalizer
from .config import TrainArgs


class FedAvg:
    """FedAvg (McMahan et al. 2017): the sample-weighted average of the local models, with a
    server learning rate eta: w <- w + eta (aggregate - w) (eta = 1 takes the aggregate)."""

    name = "FedAvg"

    def __init__(self, train: TrainArgs):
        self.train = train

    @property
    def proximal_mu(self) -> float:
        return 0.0

    def uploads(self, results: list[LocalResult], global_model: StateDict) -> list[ClientModel]:
        return [(float(r.num_samples), r.state) for r in results]

    def step(self, global_model: StateDict, aggregate: StateDict) -> StateDict:
        eta = self.train.server_lr
        if eta == 1.0:
            return aggregate
        return {k: (global_model[k] + eta * (v - global_model[k]) if is_weight_param(k, v)
                    else v) for k, v in aggregate.items()}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless."""


class FedProx(FedAvg):
    """FedProx (Li et al. 2020, "Federated optimization in heterogeneous networks"): clients
    minimise F_k(w) + mu/2 ||w - w_global||^2; the server averages as FedAvg."""

    name = "FedProx"

    @property
    def proximal_mu(self) -> float:
        return self.train.fedprox_mu


class FedNova(FedAvg):
    """FedNova (Wang et al. 2020, "Tackling the objective inconsistency problem in
    heterogeneous federated optimization"): client i's update is normalised by ||a_i||_1
    (its number of local steps for plain SGD; see ``sgd_normalizer``), and the server moves by
    tau_eff = sum_i p_i ||a_i||_1 times the p-weighted average of the normalised updates
    (p_i = n_i / n). Here each upload becomes w + (tau_eff / ||a_i||_1) (w_i - w), so the
    sample-weighted average the pipeline forms (plain or robust) is FedNova's update and the
    defenses compare clients on the same scale. Clients train with SGD; its momentum enters
    ||a_i||_1."""

    name = "FedNova"

    def uploads(self, results: list[LocalResult], global_model: StateDict) -> list[ClientModel]:
        t = self.train
        norms = [sgd_normalizer(r.steps, t.learning_rate, t.momentum) for r in results]
        total = sum(r.num_samples for r in results)
        tau_eff = sum(r.num_samples / total * a for r, a in zip(results, norms))
        out = []
        for r, a in zip(results, norms):
            scale = tau_eff / a if a > 0 else 0.0
            state = {k: (global_model[k] + scale * (v - global_model[k])
                         if is_weight_param(k, v) else v) for k, v in r.state.items()}
            out.append((float(r.num_samples), state))
        return out


class FedOpt(FedAvg):
    """FedOpt (Reddi et al. 2021, "Adaptive federated optimization", Algorithm 2): with the
    pseudo-gradient Delta = aggregate - w,

        m <- beta1 m + (1 - beta1) Delta
        v <- beta2 v + (1 - beta2) Delta^2                  (FedAdam)
        v <- v - (1 - beta2) Delta^2 sign(v - Delta^2)      (FedYogi)
        v <- v + Delta^2                                    (FedAdagrad)
        w <- w + eta m / (sqrt(v) + tau)

    with v starting at tau^2 and m at 0 (no bias correction, as the paper). ``server_optimizer:
    sgd`` is server momentum instead (FedAvgM, Hsu et al. 2019): m <- mu m + Delta,
    w <- w + eta m."""

    name = "FedOpt"

    def __init__(self, train: TrainArgs):
        super().__init__(train)
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def step(self, global_model: StateDict, aggregate: StateDict) -> StateDict:
        t = self.train
        out = {}
        for k, v in aggregate.items():
            if not is_weight_param(k, v):
                out[k] = v
                continue
            w = global_model[k]
            delta = v - w
            if t.server_optimizer == "sgd":
                m = self.m[k] * t.server_momentum + delta if k in self.m else delta.clone()
                self.m[k] = m
                out[k] = w + t.server_lr * m
                continue
            m = self.m.get(k, torch.zeros_like(delta))
            second = self.v.get(k, torch.full_like(delta, t.server_tau ** 2))
            m = t.server_beta1 * m + (1 - t.server_beta1) * delta
            sq = delta * delta
            if t.server_optimizer == "adam":
                second = t.server_beta2 * second + (1 - t.server_beta2) * sq
            elif t.server_optimizer == "yogi":
                second = second - (1 - t.server_beta2) * sq * torch.sign(second - sq)
            else:  # adagrad
                second = second + sq
            self.m[k], self.v[k] = m, second
            out[k] = w + t.server_lr * m / (second.sqrt() + t.server_tau)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"m": dict(self.m), "v": dict(self.v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m = {k: v.clone() for k, v in state["m"].items()}
        self.v = {k: v.clone() for k, v in state["v"].items()}


OPTIMIZERS: dict[str, type[FedAvg]] = {c.name: c for c in (FedAvg, FedProx, FedNova, FedOpt)}


def build_optimizer(train: TrainArgs) -> FedAvg:
    return OPTIMIZERS[train.federated_optimizer](train)
