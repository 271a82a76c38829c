"""Time FL rounds of the simulation, split into their parts, for the models of the main job.

    python -m bench.fl_round                       # lr and cnn, 10 clients on all 8,000 digits
    python -m bench.fl_round --models lr,cnn,lenet5 --clients 10,70 --rounds 3

Per case one round runs first (warm-up: allocations, kernel choice), then ``--rounds`` timed
rounds; each part is the median over them, from the rounds' own records: ``train_time_s``
(the clients' local training, one epoch each), ``aggregation_time_s`` (defense, aggregation
and server step), ``eval_time_s`` (the 2,000 test digits) and ``round_time_s``. Results go to
bench/results/fl_round.json, and a Markdown table is printed.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from fedsec.fl import Experiment, parse_config

DEFENSES = {"fedavg": {"enable_defense": False},
            "m-krum": {"enable_defense": True, "defense_type": "krum",
                       "byzantine_client_num": 1, "krum_param_m": 5},
            "median": {"enable_defense": True, "defense_type": "coordinate_wise_median"}}
PARTS = ("round_time_s", "train_time_s", "aggregation_time_s", "eval_time_s")


def time_case(model: str, clients: int, defense: str, rounds: int) -> dict:
    experiment = Experiment(parse_config({
        "data_args": {"dataset": "digits", "partition_method": "hetero"},
        "model_args": {"model": model},
        "train_args": {"client_num_in_total": clients, "client_num_per_round": clients,
                       "comm_round": rounds + 1, "batch_size": 32, "learning_rate": 0.05},
        "defense_args": DEFENSES[defense]}))
    records = list(experiment.rounds())[1:]  # the first round warms up
    return {"model": model, "clients": clients, "defense": defense,
            "parameters": sum(v.numel() for v in experiment.global_model.values()),
            **{part: statistics.median(r[part] for r in records) for part in PARTS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lr,cnn")
    parser.add_argument("--clients", default="10")
    parser.add_argument("--defenses", default="fedavg,m-krum,median")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fl_round.json"))
    args = parser.parse_args(argv)
    rows = [time_case(m, int(c), d, args.rounds) for m in args.models.split(",")
            for c in args.clients.split(",") for d in args.defenses.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch": torch.__version__,
                                    "threads": torch.get_num_threads(), "rows": rows},
                                   indent=2) + "\n")
    print("| model | parameters | clients | defense | round (s) | train (s) | aggregation (ms) "
          "| eval (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['parameters']:,} | {r['clients']} | {r['defense']} | "
              f"{r['round_time_s']:.2f} | {r['train_time_s']:.2f} | "
              f"{r['aggregation_time_s'] * 1000:.2f} | {r['eval_time_s']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
