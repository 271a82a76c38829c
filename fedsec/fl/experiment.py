"""One FL experiment: FedAvg-style rounds (McMahan et al. 2017) with the attacker and the
defender of the FedMLSecurity design (Han et al.) injected into client training and server
aggregation.

A round: sample clients; each trains from the global model on its data (a malicious client's
data poisoned first); the server aggregates the local models through the security pipeline
(reconstruction attack, model poisoning, defenses before / on / after aggregation), with the
native weighted mean as FedAvg's aggregation and the federated optimizer's server step; the
global model is evaluated. Every random choice is seeded from (seed, round, client), so a
resumed run gives exactly the numbers of an uninterrupted one.

An experiment owns its attack, defense, model and optimizer: several can run in one process.
They receive the experiment's constants once (``Component.setup``); each round's state comes
in its ``RoundContext``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Iterator

import numpy as np
import torch

from ..data import load_dataset, partition
from ..data.subset import subset
from ..models import build_model, model_task, prepare_data
from ..security import (RoundContext, Setting, Stage, StateDict, aggregate_round,
                        defend_client_update, fedavg, is_malicious)
from ..security.pipeline import hooks
from .. import threads
from ..aggregation.errors import CannotAggregateError
from .batched import ClientData, batching_obstacle, batching_pays, train_batched
from .client import LocalResult, LocalTraining, train_local
from .config import ConfigError, ExperimentConfig
from .evaluation import evaluate
from .optimizers import build_optimizer

# Independent random streams of one round, so e.g. an attack's draws never shift the sampling.
_SAMPLING, _CLIENT = 1, 2


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from the experiment's seed and integers naming a random stream."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(
        2, np.uint64)[0] >> np.uint64(1))


class Experiment:
    def __init__(self, config: ExperimentConfig):
        self.config = config
        c = config
        self.seed = c.common.random_seed
        self.device = _device(c.device.device)
        self.attack = c.attack.create() if c.attack else None
        self.defense = c.defense.create() if c.defense else None
        self.optimizer = build_optimizer(c.train)
        t = c.train
        self.training = LocalTraining(t.epochs, t.batch_size, t.client_optimizer,
                                      t.learning_rate, t.momentum, t.weight_decay,
                                      self.optimizer.proximal_mu)
        self.task = model_task(c.model.model)
        data = load_dataset(c.data.dataset, c.data.data_cache_dir,
                            target="sequence" if self.task == "language_model" else "last",
                            sequence_length=c.data.sequence_length, seed=self.seed)
        # A model with a tokenizer of its own (hf_*) re-encodes the text it is given.
        self.data = prepare_data(c.model.model, subset(data, c.data.train_size,
                                                        c.data.test_size, self.seed),
                                 c.model.options)
        parts = partition(self.data, t.client_num_in_total, c.data.partition_method,
                          alpha=c.data.partition_alpha, seed=self.seed)
        # Every client's rows in one pool, client after client: a client's data is a view of
        # it, and batched training reads the pool directly.
        rows = torch.as_tensor(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]),
                               dtype=torch.long)
        self.pool = (self.data.train_x[rows].to(self.device),
                     self.data.train_y[rows].to(self.device))
        self.pool_starts = np.cumsum([0, *map(len, parts)])[:-1].tolist()
        self.client_data = [(self.pool[0][s:s + len(p)], self.pool[1][s:s + len(p)])
                            for s, p in zip(self.pool_starts, parts)]
        self.test = (self.data.test_x.to(self.device), self.data.test_y.to(self.device))
        self.backdoor_test = self._backdoor_test_set()
        self.model = self.new_model()
        setting = Setting(federation=c.federation, model_factory=self.new_model,
                          client_learning_rate=t.learning_rate, comm_round=t.comm_round,
                          server_learning_rate=t.server_lr,
                          input_shape=tuple(self.data.input_shape),
                          num_classes=self.data.num_classes,
                          training_data=(self.data.train_x, self.data.train_y))
        for component in (self.attack, self.defense):
            if component is not None:
                component.setup(setting)
        self.batching = _client_batching(t.client_batching, self.model, c.model.model)
        self.training_flops = threads.forward_flops(self.model, self.test[0][:1])
        torch.manual_seed(self.seed)
        self.global_model: StateDict = {k: v.detach().clone()
                                        for k, v in self.new_model().state_dict().items()}
        self.round = 0  # the next round to run

    # --- building blocks -----------------------------------------------------------------------

    def new_model(self) -> torch.nn.Module:
        m = self.config.model
        return build_model(m.model, input_shape=self.data.input_shape,
                           num_classes=self.data.num_classes, **m.options).to(self.device)

    def client_seed(self, round_index: int, client: int) -> int:
        """The seed of ``client``'s local training in round ``round_index`` (its batch order,
        dropout): the same whether the client trains here, batched, or in another engine."""
        return derive_seed(self.seed, round_index, client, _CLIENT)

    def _backdoor_test_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Clean test samples with the attack's trigger, labelled with its target: accuracy
        on them is the backdoor's success rate (attacks that define ``backdoor_test_set``)."""
        make = getattr(self.attack, "backdoor_test_set", None)
        return make(*self.test, num_classes=self.data.num_classes) if make else None

    def sample_clients(self, round_index: int) -> list[int]:
        """The round's clients: all, or client_num_per_round drawn without replacement."""
        t = self.config.train
        if t.client_num_per_round == t.client_num_in_total:
            return list(range(t.client_num_in_total))
        rng = np.random.default_rng([self.seed, round_index, _SAMPLING])
        return sorted(int(c) for c in rng.choice(t.client_num_in_total,
                                                   t.client_num_per_round, replace=False))

    def _context(self, round_index: int, clients: list[int]) -> RoundContext:
        return RoundContext(round_index, list(clients), np.random.default_rng([self.seed,
                                                                                round_index]),
                            client_batches={} if hooks(self.attack, Stage.DATA_RECONSTRUCTION)
                            else None,
                            local_trainer=self._local_trainer(round_index))

    def _local_trainer(self, round_index: int):
        """``ctx.local_trainer``: ``model`` trained from the global model on (features,
        labels) as ``client`` trains in this round (its seed; the local training with the
        attacker's ``overrides``), for attacks that train a malicious client themselves."""
        def train(model: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor,
                  client: int, overrides: dict[str, Any]) -> StateDict:
            how = dataclasses.replace(self.training, **overrides)
            return train_local(model, self.global_model, features, labels, how,
                               self.client_seed(round_index, client)).state
        return train

    # --- one round -----------------------------------------------------------------------------

    def run_round(self) -> dict[str, Any]:
        """Run round ``self.round``; returns its record (see docs/experiments.md)."""
        start = time.perf_counter()
        r = self.round
        clients = self.sample_clients(r)
        ctx = self._context(r, clients)
        train_start = time.perf_counter()
        threads.apply(self.training_flops)
        results = self._train_clients(clients, ctx)
        if ctx.client_batches is not None:
            ctx.client_batches.update((cid, result.first_batch) for cid, result
                                      in zip(clients, results) if result.first_batch is not None)
        train_time = time.perf_counter() - train_start
        models = self.optimizer.uploads(results, self.global_model)
        try:
            new_global = aggregate_round(self.attack, self.defense, models, self.global_model,
                                         ctx, fedavg, self.optimizer.step)
        except CannotAggregateError as exc:  # e.g. Bulyan once the non-finite uploads are out
            new_global, refused = self.global_model, str(exc)
        else:
            refused = None
        rejected = _non_finite_entries(new_global)
        if not rejected:  # nothing writes into a global model in place: no copy needed
            self.global_model = new_global
        record: dict[str, Any] = {"round": r, "clients": clients}
        record.update(_jsonable(ctx.metrics))
        if refused is not None:
            record["aggregation_refused"] = f"{refused}; the previous global model is kept"
        if rejected:
            record["global_model_rejected"] = (f"non-finite values after aggregation in "
                                               f"{rejected[:5]}; the previous global model "
                                               f"is kept")
        record["train_loss"] = _weighted_mean([x.train_loss for x in results],
                                              [x.num_samples for x in results])
        record["train_time_s"] = train_time
        if self._evaluates(r):
            eval_start = time.perf_counter()
            record.update(self.evaluate())
            record["eval_time_s"] = time.perf_counter() - eval_start
        record["round_time_s"] = time.perf_counter() - start
        self.round += 1
        return record

    def _train_clients(self, clients: list[int], ctx: RoundContext) -> list[LocalResult]:
        """The round's local training, in ``clients``' order: one client after another, or,
        with batching, together in groups of clients that train alike (the attacker may change
        a malicious client's epochs or learning rate)."""
        work: list[tuple[LocalTraining, ClientData]] = []
        for cid in clients:
            x, y = self.client_data[cid]
            seed = self.client_seed(ctx.round_index, cid)
            data, how = ClientData(x, y, seed, self.pool, self.pool_starts[cid]), self.training
            if is_malicious(self.attack, cid, ctx):
                data = ClientData(*self.attack.poison_data(x, y, cid, ctx), seed)
                how = dataclasses.replace(how, **self.attack.local_training(cid, ctx))
            work.append((how, data))
        if not self.batching:
            results = [train_local(self.model, self.global_model, d.features, d.labels, how,
                                   d.seed) for how, d in work]
        else:
            results = self._train_batched(work, ctx)
        return [self._defend_upload(result, cid, ctx) for cid, result in zip(clients, results)]

    def _train_batched(self, work: list[tuple[LocalTraining, ClientData]],
                       ctx: RoundContext) -> list[LocalResult]:
        groups: dict[LocalTraining, list[int]] = {}
        for position, (how, _) in enumerate(work):
            groups.setdefault(how, []).append(position)
        # the first batches: ground truth of a reconstruction, or a client-side defense's input
        keep_first_batch = (ctx.client_batches is not None
                            or hooks(self.defense, Stage.CLIENT_UPDATE))
        results: list[LocalResult | None] = [None] * len(work)
        for how, positions in groups.items():
            trained = train_batched(self.model, self.global_model,
                                    [work[p][1] for p in positions], how,
                                    keep_first_batch=keep_first_batch)
            for position, result in zip(positions, trained):
                results[position] = result
        return results

    def _defend_upload(self, result: LocalResult, client: int, ctx: RoundContext
                       ) -> LocalResult:
        """The client's result with its model as it uploads it: through the client-side
        defense (Stage.CLIENT_UPDATE), on the batch its first step trained on."""
        if not hooks(self.defense, Stage.CLIENT_UPDATE):
            return result
        state = defend_client_update(self.defense, result.state, self.global_model,
                                     result.first_batch[0], client, ctx)
        return dataclasses.replace(result, state=state)

    def _evaluates(self, round_index: int) -> bool:
        every = self.config.validation.frequency_of_the_test
        return (round_index + 1) % every == 0 or round_index == self.config.train.comm_round - 1

    def evaluate(self) -> dict[str, float]:
        """Test metrics of the global model (and the backdoor's success rate, if any)."""
        model = self.model  # the clients' training model: each client reloads it anyway
        model.load_state_dict(self.global_model)
        out = evaluate(model, *self.test)
        if self.backdoor_test is not None:
            out["backdoor_accuracy"] = evaluate(model, *self.backdoor_test,
                                                prefix="backdoor")["backdoor_accuracy"]
        return out

    def rounds(self) -> Iterator[dict[str, Any]]:
        """Run the remaining rounds, yielding each record as the round ends."""
        while self.round < self.config.train.comm_round:
            yield self.run_round()

    # --- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the next round depends on (after ``self.round - 1`` finished)."""
        return {"round": self.round - 1, "global_model": self.global_model,
                "optimizer": self.optimizer.state_dict(),
                "attack": self.attack.state_dict() if self.attack else {},
                "defense": self.defense.state_dict() if self.defense else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = int(state["round"]) + 1
        self.global_model = {k: v.to(self.device) for k, v in state["global_model"].items()}
        self.optimizer.load_state_dict(state["optimizer"])
        if self.attack:
            self.attack.load_state_dict(state["attack"])
        if self.defense:
            self.defense.load_state_dict(state["defense"])


def _client_batching(mode: str, model: torch.nn.Module, name: str) -> bool:
    """Whether the clients of a round train together (train_args.client_batching)."""
    if mode == "off":
        return False
    obstacle = batching_obstacle(model)
    if mode == "on" and obstacle is not None:
        raise ConfigError(f"train_args.client_batching=on, but model {name!r} cannot train "
                          f"its clients together: {obstacle}; use auto or off")
    return obstacle is None if mode == "on" else batching_pays(model)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device_args.device='cuda' but torch sees no usable CUDA device; "
                          "use 'cpu' or 'auto'")
    return torch.device(name)


def _non_finite_entries(state: StateDict) -> list[str]:
    return [k for k, v in state.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _weighted_mean(values: list[float], weights: list[int]) -> float:
    total = sum(weights)
    return sum(v * w for v, w in zip(values, weights)) / total if total else math.nan


def _jsonable(value: Any) -> Any:
    """ctx.metrics as JSON: numpy and torch scalars to numbers, dict keys to strings, arrays
    to lists; anything else by its repr."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _jsonable(value.tolist())
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    return repr(value)

