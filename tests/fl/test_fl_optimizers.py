"""Federated optimizers on cases whose answer is known: FedAvg's weighted average and server
learning rate, FedProx's proximal gradient, FedNova's normalised averaging (Wang et al. 2020,
Eq. 6 and the closed forms of ||a_i||_1), FedOpt's Adam / Yogi / Adagrad / momentum server
steps (Reddi et al. 2021, Algorithm 2), written out in float64 by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fedsec
from fedsec.fl.client import LocalResult, LocalTraining, sgd_normalizer, train_local
from fedsec.fl.config import FEDERATED_OPTIMIZERS, TrainArgs
from fedsec.fl.optimizers import OPTIMIZERS, FedAvg, FedNova, FedOpt, FedProx, build_optimizer


def _state(w, running=None):
    out = {"w": torch.tensor(w, dtype=torch.float64)}
    if running is not None:
        out["bn.running_mean"] = torch.tensor(running, dtype=torch.float64)
    return out


def _result(n, w, steps=1):
    return LocalResult(n, _state(w), steps, 0.0, None)


def test_registry_matches_the_config_names():
    assert sorted(OPTIMIZERS) == sorted(FEDERATED_OPTIMIZERS)
    for name, cls in OPTIMIZERS.items():
        assert type(build_optimizer(TrainArgs(federated_optimizer=name))) is cls


def test_fedavg_uploads_weight_by_samples_and_server_lr_interpolates():
    opt = FedAvg(TrainArgs())
    models = opt.uploads([_result(10, [1.0, 2.0]), _result(30, [5.0, 6.0])], _state([0, 0]))
    assert [c for c, _ in models] == [10.0, 30.0]
    avg = fedsec.mean([m for _, m in models], weights=[c for c, _ in models])
    assert torch.allclose(avg["w"], torch.tensor([4.0, 5.0], dtype=torch.float64))
    assert opt.step(_state([0, 0]), avg) is avg  # eta = 1 takes the average as it is
    half = FedAvg(TrainArgs(server_lr=0.5)).step(_state([0.0, 0.0], [7.0]),
                                                  _state([4.0, 5.0], [9.0]))
    assert torch.allclose(half["w"], torch.tensor([2.0, 2.5], dtype=torch.float64))
    assert half["bn.running_mean"].item() == 9.0  # statistics are taken, not stepped


@pytest.mark.parametrize("steps,lr,rho,mu,expected", [
    (10, 0.1, 0.0, 0.0, 10.0),
    (10, 0.1, 0.9, 0.0, (10 - 0.9 * (1 - 0.9 ** 10) / 0.1) / 0.1),
    (7, 0.05, 0.5, 0.0, (7 - 0.5 * (1 - 0.5 ** 7) / 0.5) / 0.5),
    (10, 0.1, 0.0, 0.5, (1 - (1 - 0.1 * 0.5) ** 10) / (0.1 * 0.5)),
    (1, 0.3, 0.9, 0.0, 1.0),
    (0, 0.1, 0.0, 0.0, 0.0),
])
def test_sgd_normalizer_matches_fednova_closed_forms(steps, lr, rho, mu, expected):
    assert sgd_normalizer(steps, lr, rho, mu) == pytest.approx(expected, rel=1e-12)


def test_sgd_normalizer_is_what_torch_sgd_does():
    """A linear model whose gradient is constant g: after tau steps of torch's SGD with
    momentum, the displacement is -lr * ||a||_1 * g."""
    w = torch.zeros(3, requires_grad=True)
    g = torch.tensor([1.0, -2.0, 0.5])
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.8)
    for _ in range(6):
        opt.zero_grad()
        (w * g).sum().backward()
        opt.step()
    assert torch.allclose(w.detach(), -0.1 * sgd_normalizer(6, 0.1, 0.8) * g, atol=1e-6)


def test_fednova_average_of_uploads_is_the_normalised_update():
    """Wang et al. Eq. 6: w <- w - tau_eff sum_i p_i d_i, d_i = (w - w_i) / a_i."""
    train = TrainArgs(federated_optimizer="FedNova", learning_rate=0.1)
    g = np.array([1.0, -1.0])
    locals_ = [np.array([0.0, 1.0]), np.array([3.0, -5.0]), np.array([2.0, 2.0])]
    counts, taus = [10, 30, 20], [2, 8, 5]
    results = [_result(n, w.tolist(), s) for n, w, s in zip(counts, locals_, taus)]
    models = FedNova(train).uploads(results, _state(g.tolist()))
    avg = fedsec.mean([m for _, m in models], weights=[c for c, _ in models])
    p = np.array(counts) / sum(counts)
    tau_eff = float(p @ np.array(taus, float))
    expected = g - tau_eff * sum(pi * (g - wi) / ti for pi, wi, ti in zip(p, locals_, taus))
    assert np.allclose(avg["w"].numpy(), expected, rtol=1e-12)


def test_fednova_equals_fedavg_when_every_client_makes_the_same_steps():
    train = TrainArgs(federated_optimizer="FedNova")
    results = [_result(5, [1.0, 2.0], 4), _result(15, [3.0, 0.0], 4)]
    nova = FedNova(train).uploads(results, _state([0.0, 0.0]))
    avg = FedAvg(train).uploads(results, _state([0.0, 0.0]))
    for (c1, m1), (c2, m2) in zip(nova, avg):
        assert c1 == c2 and torch.allclose(m1["w"], m2["w"])


def _reddi(kind, deltas, lr, b1, b2, tau, w0):
    """Reddi et al. 2021, Algorithm 2, in float64."""
    w, m, v = np.array(w0, float), 0.0, tau ** 2
    for d in deltas:
        d = np.asarray(d, float)
        m = b1 * m + (1 - b1) * d
        if kind == "adam":
            v = b2 * v + (1 - b2) * d * d
        elif kind == "yogi":
            v = v - (1 - b2) * d * d * np.sign(v - d * d)
        else:
            v = v + d * d
        w = w + lr * m / (np.sqrt(v) + tau)
    return w


@pytest.mark.parametrize("kind", ["adam", "yogi", "adagrad"])
def test_fedopt_adaptive_steps_follow_reddi_et_al(kind):
    train = TrainArgs(federated_optimizer="FedOpt", server_optimizer=kind, server_lr=0.3,
                      server_beta1=0.9, server_beta2=0.99, server_tau=1e-2)
    opt = FedOpt(train)
    w = np.array([0.5, -1.0, 2.0])
    targets = [np.array([1.0, -1.5, 2.0]), np.array([0.0, 0.0, 1.0]),
               np.array([2.0, 1.0, -3.0])]
    deltas = []
    for target in targets:
        deltas.append(target - w)
        new = opt.step(_state(w.tolist(), [1.0]), _state(target.tolist(), [4.0]))
        assert new["bn.running_mean"].item() == 4.0
        w = new["w"].numpy()
    expected = _reddi(kind, deltas, 0.3, 0.9, 0.99, 1e-2, [0.5, -1.0, 2.0])
    assert np.allclose(w, expected, rtol=1e-12)


def test_fedopt_sgd_is_server_momentum():
    opt = FedOpt(TrainArgs(federated_optimizer="FedOpt", server_optimizer="sgd", server_lr=0.5,
                           server_momentum=0.9))
    w1 = opt.step(_state([0.0]), _state([1.0]))["w"].item()       # m = 1
    w2 = opt.step(_state([w1]), _state([w1 + 2.0]))["w"].item()   # m = 0.9 * 1 + 2
    assert w1 == pytest.approx(0.5) and w2 == pytest.approx(0.5 + 0.5 * 2.9)


def test_fedopt_state_round_trips():
    train = TrainArgs(federated_optimizer="FedOpt", server_optimizer="adam", server_lr=0.1)
    a, b = FedOpt(train), FedOpt(train)
    a.step(_state([0.0, 1.0]), _state([1.0, 0.0]))
    b.load_state_dict(a.state_dict())
    x = a.step(_state([0.2, 0.3]), _state([0.5, 0.5]))
    y = b.step(_state([0.2, 0.3]), _state([0.5, 0.5]))
    assert torch.equal(x["w"], y["w"])


def test_fedprox_client_step_adds_the_proximal_gradient():
    """Two full-batch SGD steps: the second sees mu (w - w_global) beside the loss gradient."""
    assert FedProx(TrainArgs(fedprox_mu=0.7)).proximal_mu == 0.7
    assert FedAvg(TrainArgs(fedprox_mu=0.7)).proximal_mu == 0.0
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    how = LocalTraining(epochs=2, batch_size=8, optimizer="sgd", learning_rate=0.5,
                        proximal_mu=0.7)
    result = train_local(model, start, x, y, how, seed=3)
    assert result.steps == 2
    w = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    for _ in range(2):
        logits = x @ w["weight"].T + w["bias"]
        loss = torch.nn.functional.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, [w["weight"], w["bias"]])
        with torch.no_grad():
            for (k, p), gr in zip(w.items(), grads):
                p -= 0.5 * (gr + 0.7 * (p - start[k]))
    for k in start:
        assert torch.allclose(result.state[k], w[k].detach(), atol=1e-12), k


def test_local_training_is_seeded():
    torch.manual_seed(1)
    model = torch.nn.Linear(5, 2)
    x, y = torch.randn(40, 5), torch.randint(0, 2, (40,))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    untouched = {k: v.clone() for k, v in start.items()}
    how = LocalTraining(epochs=1, batch_size=7, optimizer="sgd", learning_rate=0.1)
    a = train_local(model, start, x, y, how, seed=11)
    b = train_local(model, start, x, y, how, seed=11)
    c = train_local(model, start, x, y, how, seed=12)
    assert a.steps == 6 and a.num_samples == 40
    assert all(torch.equal(a.state[k], b.state[k]) for k in start)
    assert not torch.equal(a.state["weight"], c.state["weight"])  # another batch order
    assert all(torch.equal(start[k], untouched[k]) for k in start)  # the global model is read only
