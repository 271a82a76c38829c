"""A fedsec experiment config run through Flower's simulation engine (Ray) with FedSecStrategy:
the same clients, partitions, model, local training (fedsec's ``train_local`` with the
experiment's per-client seeds) and defense, so rounds per second compare engines, not tasks.

Used by ``python -m bench.fl_round --sections flower``; a module of its own because Ray's
workers import the ClientApp by name.
"""
from __future__ import annotations

import functools
import time

import yaml
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedsec.fl import Experiment, parse_config
from fedsec.fl.client import train_local
from fedsec.integrations.flower import FedSecStrategy

client_app = ClientApp()


@functools.lru_cache(maxsize=1)
def _experiment(config_yaml: str) -> Experiment:
    """The experiment of a config (its YAML text travels in each round's train config), built
    once per worker process: data, partition, model."""
    return Experiment(parse_config(yaml.safe_load(config_yaml)))


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    experiment = _experiment(config["experiment"])
    client = int(context.node_config["partition-id"])
    features, labels = experiment.client_data[client]
    result = train_local(experiment.model, msg.content["arrays"].to_torch_state_dict(), features,
                         labels, experiment.training,
                         experiment.client_seed(int(config["server-round"]) - 1, client))
    metrics = MetricRecord({"num-examples": result.num_samples, "partition-id": client,
                            "train_loss": result.train_loss})
    return Message(RecordDict({"arrays": ArrayRecord(result.state), "metrics": metrics}),
                   reply_to=msg)


def run(raw: dict, rounds: int) -> dict:
    """Run ``raw`` (YAML sections) for ``rounds`` rounds in Flower's simulation; returns the
    wall time, the time of the rounds after the first (Ray's start-up and the workers' data
    loading excluded) and the final test accuracy."""
    key = yaml.safe_dump(raw)
    experiment = _experiment(key)
    t = experiment.config.train
    if t.client_num_per_round != t.client_num_in_total:
        raise ValueError("the Flower comparison samples every client each round")
    attack = raw.get("attack_args") or {}
    if attack.get("enable_attack") and attack.get("attack_type") != "byzantine":
        raise ValueError("the Flower comparison injects server-side attacks only (byzantine)")
    ends: list[float] = []
    accuracy: dict[int, float] = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        if server_round > 0:
            experiment.global_model = arrays.to_torch_state_dict()
            accuracy[server_round] = experiment.evaluate()["test_accuracy"]
        ends.append(time.perf_counter())
        return MetricRecord({"accuracy": accuracy.get(server_round, 0.0)})

    server_app = ServerApp()

    @server_app.main()
    def server(grid: Grid, context: Context) -> None:
        strategy = FedSecStrategy(num_nodes=t.client_num_in_total,
                                  defense_args=raw.get("defense_args"),
                                  attack_args=raw.get("attack_args"), seed=experiment.seed,
                                  fraction_evaluate=0.0)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(experiment.global_model),
                       num_rounds=rounds, evaluate_fn=evaluate,
                       train_config=ConfigRecord({"experiment": key}))

    start = time.perf_counter()
    run_simulation(server_app, client_app, num_supernodes=t.client_num_in_total,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    wall = time.perf_counter() - start
    return {"rounds": rounds, "wall_s": wall,
            "rounds_after_first_s": ends[-1] - ends[1] if len(ends) > 2 else None,
            "final_test_accuracy": accuracy.get(rounds)}
