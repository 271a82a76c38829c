"""A fedsec experiment config run through Flower's simulation engine (Ray) with FedSecStrategy:
the same clients, partitions, model, local training (fedsec's ``train_local`` with the
experiment's per-client seeds), server-side attack and defense, one virtual Flower client
(SuperNode) per fedsec client. The per-round accuracy can then be set beside the in-process
run of the same config and seed: the engines differ, the task does not.

- ``run(raw, rounds)``: one config (YAML sections) in Flower's simulation; the wall time, the
  rounds' time after Ray's start-up and every round's test accuracy.
- ``python -m fedsec.integrations.flower.simulation MATRIX OUT --seed K [--cell AXIS=VALUE]``:
  the cells of a matrix (all, or those with the given axis values) through Flower, each
  beside its in-process run under ``OUT/cells/<cell>/seed<K>`` (written by ``fedsec matrix
  MATRIX --out OUT``); writes ``OUT/flower.md``, ``flower.json`` and ``flower.png``.
  configs/paper/exp10_real_world.yaml runs this way at the paper's 70 clients.

Ray's workers import the ClientApp by name, so it lives at module level here.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import yaml
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from ...fl import Experiment, parse_config
from ...fl.client import train_local
from ...fl.run_dir import RunDir
from .strategy import FedSecStrategy

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


def run(raw: dict, rounds: int | None = None) -> dict:
    """Run ``raw`` (YAML sections) for ``rounds`` rounds (default its comm_round) in Flower's
    simulation; returns the wall time, the time of the rounds after the first (Ray's start-up
    and the workers' data loading excluded), the test accuracy of every round and the last."""
    key = yaml.safe_dump(raw)
    experiment = _experiment(key)
    t = experiment.config.train
    rounds = t.comm_round if rounds is None else rounds
    if t.client_num_per_round != t.client_num_in_total:
        raise ValueError(f"client_num_per_round={t.client_num_per_round}: the Flower path "
                         f"samples every one of the {t.client_num_in_total} clients each round")
    attack = raw.get("attack_args") or {}
    if attack.get("enable_attack") and attack.get("attack_type") != "byzantine":
        raise ValueError(f"attack_type={attack.get('attack_type')!r}: the Flower path injects "
                         f"server-side model poisoning only (byzantine)")
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
            "test_accuracy": [accuracy[r] for r in sorted(accuracy)],
            "final_test_accuracy": accuracy.get(rounds)}


def compare_matrix(matrix_path: str, out: Path, seed: int,
                   where: dict[str, str] | None = None) -> dict:
    """The cells of the matrix (those with the axis values of ``where``; all by default) at
    ``seed`` through Flower, beside their in-process runs in ``out``; writes flower.json,
    flower.md and flower.png into ``out``."""
    from ...matrix import load_matrix

    matrix = load_matrix(matrix_path)
    where = where or {}
    unknown = {a: v for a, v in where.items() if v not in matrix.axes.get(a, {})}
    if unknown:
        raise ValueError(f"--cell {unknown}: not an axis value of {matrix.name} "
                         f"({', '.join(f'{a}: {list(vs)}' for a, vs in matrix.axes.items())})")
    cells = []
    for cell in (c for c in matrix.cells if all(c.value(a) == v for a, v in where.items())):
        run_dir = RunDir(out / "cells" / cell.name / f"seed{seed}")
        if not run_dir.file("summary.json").exists():
            raise FileNotFoundError(f"{run_dir.path} holds no finished run: run `fedsec matrix "
                                    f"{matrix_path} --out {out}` first")
        in_process = [r["test_accuracy"] for r in run_dir.records()]
        flower = run(cell.raw_with_seed(seed))
        cells.append({"cell": cell.label, "in_process": in_process, **flower,
                      "max_abs_difference": max(abs(a - b) for a, b in
                                                zip(in_process, flower["test_accuracy"]))})
    chosen = "".join(f" --cell {a}={v}" for a, v in where.items())
    result = {"matrix": matrix.name, "seed": seed, "cells": cells,
              "command": f"python -m fedsec.integrations.flower.simulation {matrix_path} "
                         f"{out} --seed {seed}{chosen}"}
    (out / "flower.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(cells, matrix.title, out / "flower.png")
    (out / "flower.md").write_text(_markdown(result, matrix.title))
    return result


def _markdown(result: dict, title: str) -> str:
    lines = [f"# {title}: in-process beside Flower's simulation engine", "",
             f"Each cell at seed {result['seed']}, once in fedsec's in-process loop (the "
             f"matrix's run) and once through Flower's simulation engine (Ray), one virtual "
             f"client per fedsec client, with FedSecStrategy, the same data, partitions, local "
             f"training and seeds. Regenerate with `{result['command']}`.", "",
             "| cell | final accuracy in-process | final accuracy Flower | largest per-round "
             "difference | Flower wall (s) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {c['cell']} | {c['in_process'][-1]:.4f} | {c['final_test_accuracy']:.4f} | "
              f"{c['max_abs_difference']:.4f} | {c['wall_s']:.0f} |" for c in result["cells"]]
    return "\n".join(lines + ["", "![curves](flower.png)", ""])


def _plot(cells: list[dict], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for c in cells:
        rounds = range(1, len(c["in_process"]) + 1)
        (line,) = ax.plot(rounds, c["in_process"], label=f"{c['cell']} (in-process)")
        ax.plot(range(1, len(c["test_accuracy"]) + 1), c["test_accuracy"], linestyle="none",
                marker="o", markersize=3, color=line.get_color(), label=f"{c['cell']} (Flower)")
    ax.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1))
    ax.set_title(f"{title}\nlines: in-process, dots: Flower simulation", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("matrix", help="a matrix config")
    parser.add_argument("out", type=Path, help="the matrix's output folder (fedsec matrix --out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cell", action="append", default=[], metavar="AXIS=VALUE",
                        help="only the cells with this axis value (repeatable)")
    args = parser.parse_args(argv)
    where = dict(item.split("=", 1) for item in args.cell if "=" in item)
    if len(where) != len(args.cell):
        parser.error(f"--cell takes AXIS=VALUE; got {args.cell}")
    result = compare_matrix(args.matrix, args.out, args.seed, where)
    print(_markdown(result, result["matrix"]))
    return 0


if __name__ == "__main__":
    # Ray's workers unpickle the ClientApp's functions by module name, which __main__ is not:
    # run the module's named copy.
    from fedsec.integrations.flower import simulation

    sys.exit(simulation.main())
