"""Batched clients (train_args.client_batching) train exactly as the sequential path does: per
client the same batch order, the same number of steps (fewer for fewer samples, never padded
with extra updates), the same FedProx term and optimizer state, so the local models agree to
rounding (float64: 1e-9 of the distance moved; float32 SGD: 1e-4) on every shipped model the
batching applies to; and an experiment gives the same numbers either way, deterministically."""
from __future__ import annotations

import pytest
import torch
import yaml

import fedsec.fl.batched as batched
from fedsec.fl import Experiment, load_config, parse_config
from fedsec.fl.batched import ClientData, batching_obstacle, batching_pays, train_batched
from fedsec.fl.client import LocalTraining, train_local
from fedsec.models import build_model

from support.experiments import tiny, without_times

# (model, input shape, classes, options, language model)
MODELS = {
    "lr": ((1, 28, 28), 10, {}, False),
    "cnn": ((1, 12, 12), 10, {}, False),
    "lenet5": ((1, 28, 28), 10, {}, False),
    "resnet20-group": ((3, 8, 8), 10, {"norm": "group"}, False),
    "transformer": ((12,), 20, {"d_model": 16, "num_heads": 2}, True),
}
HOWS = {
    "sgd": LocalTraining(2, 8, "sgd", 0.1),
    "sgd-momentum-wd-prox": LocalTraining(1, 8, "sgd", 0.05, momentum=0.9, weight_decay=1e-3,
                                          proximal_mu=0.1),
    "adam": LocalTraining(2, 8, "adam", 1e-3, weight_decay=1e-3),
}
# Unequal clients: one sample, fewer than a batch, a batch and a remainder, none at all.
SIZES = (1, 5, 20, 0, 13)


def make_clients(key: str, dtype: torch.dtype) -> tuple[torch.nn.Module, list[ClientData]]:
    shape, classes, options, language = MODELS[key]
    torch.manual_seed(0)
    model = build_model(key.split("-")[0], input_shape=shape, num_classes=classes,
                        **options).to(dtype)
    generator = torch.Generator().manual_seed(1)
    clients = []
    for i, n in enumerate(SIZES):
        if language:
            x = torch.randint(0, classes, (n, *shape), generator=generator)
            y = torch.randint(0, classes, (n, *shape), generator=generator)
            y[:, :4] = -100  # positions a backdoor's labels leave unscored
        else:
            x = torch.randn(n, *shape, generator=generator, dtype=dtype)
            y = torch.randint(0, classes, (n,), generator=generator)
        clients.append(ClientData(x, y, seed=100 + i))
    return model, clients


def assert_same_training(model, clients, how, rtol):
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sequential = [train_local(model, start, c.features, c.labels, how, c.seed) for c in clients]
    together = train_batched(model, start, clients, how)
    for i, (s, b) in enumerate(zip(sequential, together)):
        what = f"client {i} ({SIZES[i]} samples)"
        assert (b.num_samples, b.steps) == (s.num_samples, s.steps), what
        assert b.train_loss == pytest.approx(s.train_loss, rel=rtol, abs=rtol), what
        assert set(b.state) == set(s.state), what
        for key in s.state:
            moved = float((s.state[key] - start[key]).abs().max())
            error = float((b.state[key] - s.state[key]).abs().max())
            assert error <= rtol * max(moved, 1e-30), f"{what}, {key}: {error} vs moved {moved}"
        if s.first_batch is None:
            assert b.first_batch is None, what
        else:
            assert all(torch.equal(p, q) for p, q in zip(s.first_batch, b.first_batch)), what


@pytest.mark.parametrize("how", HOWS, ids=str)
@pytest.mark.parametrize("key", MODELS)
def test_batched_equals_sequential_in_float64(key, how):
    model, clients = make_clients(key, torch.float64)
    assert batching_obstacle(model) is None
    # Adam divides by sqrt(v): coordinates with tiny gradients amplify rounding (1e-10 seen).
    assert_same_training(model, clients, HOWS[how], rtol=1e-7 if how == "adam" else 1e-9)


@pytest.mark.parametrize("key", MODELS)
def test_batched_equals_sequential_in_float32_sgd(key):
    model, clients = make_clients(key, torch.float32)
    assert_same_training(model, clients, HOWS["sgd-momentum-wd-prox"], rtol=1e-4)


def test_groups_split_by_memory_give_the_same_models(monkeypatch):
    model, clients = make_clients("lr", torch.float64)
    how = HOWS["sgd-momentum-wd-prox"]
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    whole = train_batched(model, start, clients, how)
    monkeypatch.setattr(batched, "GROUP_MEMORY_BUDGET", 2 * 4 * 8 * 7850)  # two clients
    assert batched.group_size(model) == 2
    for a, b in zip(whole, train_batched(model, start, clients, how)):
        assert all(torch.allclose(a.state[k], b.state[k], rtol=1e-12, atol=0) for k in a.state)


def test_clients_read_from_a_shared_pool_train_as_copies_do():
    model, clients = make_clients("lr", torch.float64)
    pool = (torch.cat([c.features for c in clients]), torch.cat([c.labels for c in clients]))
    starts = [0, *torch.tensor([c.features.shape[0] for c in clients]).cumsum(0).tolist()]
    pooled = [ClientData(pool[0][s:s + len(c.labels)], pool[1][s:s + len(c.labels)], c.seed,
                         pool, s) for c, s in zip(clients, starts)]
    how = HOWS["sgd"]
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for a, b in zip(train_batched(model, start, clients, how),
                    train_batched(model, start, pooled, how)):
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


@pytest.mark.parametrize("name,options,reason", [
    ("resnet20", {}, "buffers"),
    ("bilstm", {}, "recurrent"),
    ("transformer", {"dropout": 0.1}, "dropout"),
])
def test_models_that_train_one_client_at_a_time_say_why(name, options, reason):
    shape = (3, 8, 8) if name == "resnet20" else (12,)
    model = build_model(name, input_shape=shape, num_classes=20, **options)
    assert reason in batching_obstacle(model)
    assert not batching_pays(model)


def test_auto_batches_only_where_it_pays():
    assert batching_pays(build_model("lr", input_shape=(1, 28, 28), num_classes=10))
    assert not batching_pays(build_model("cnn", input_shape=(1, 28, 28), num_classes=10))
    assert not batching_pays(build_model("transformer", input_shape=(12,), num_classes=20))


def _records(tmp_path, batching: str, **sections):
    raw = tiny(train_args={"comm_round": 3, "client_batching": batching,
                           **sections.pop("train_args", {})}, **sections)
    path = tmp_path / f"{batching}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return list(Experiment(load_config(path)).rounds())


@pytest.mark.parametrize("sections", [
    {},
    {"attack_args": {"enable_attack": True, "attack_type": "label_flipping",
                     "poisoned_client_num": 2},
     "train_args": {"federated_optimizer": "FedProx", "momentum": 0.5}},
], ids=["fedavg", "label-flipping-fedprox"])
def test_experiment_gives_the_same_numbers_batched_or_not(tmp_path, sections):
    off = _records(tmp_path, "off", **sections)
    on = _records(tmp_path, "on", **sections)
    assert without_times(on) == without_times(_records(tmp_path, "on", **sections))
    for a, b in zip(off, on):
        assert a["clients"] == b["clients"]
        for key in ("train_loss", "test_loss", "test_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), (a["round"], key)


def test_on_refuses_a_model_that_cannot_batch(tmp_path):
    raw = tiny(model_args={"model": "resnet20"}, train_args={"client_batching": "on"})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="client_batching=on.*resnet20.*buffers"):
        Experiment(load_config(path))


def test_the_attacker_trains_apart_with_its_own_epochs(monkeypatch):
    """Clients the attacker trains differently form their own group (here one client, which
    trains alone): Bagdasaryan et al.'s attacker still trains the backdoor longer."""
    import fedsec.fl.experiment as experiment_module

    groups = []
    real_batched, real_local = experiment_module.train_batched, experiment_module.train_local
    monkeypatch.setattr(experiment_module, "train_batched", lambda model, state, clients, how,
                        **options: (groups.append((len(clients), how.epochs))
                                    or real_batched(model, state, clients, how, **options)))
    monkeypatch.setattr(experiment_module, "train_local", lambda *args: (
        groups.append((1, args[4].epochs)) or real_local(*args)))
    attack = {"enable_attack": True, "attack_type": "model_replacement",
              "malicious_client_id": 3, "malicious_epochs": 4}
    raw = tiny(attack_args=attack, train_args={"comm_round": 1, "client_batching": "on"})
    list(Experiment(parse_config(raw)).rounds())
    assert sorted(groups) == [(1, 4), (9, 1)]
