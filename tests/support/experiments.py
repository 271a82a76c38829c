"""Small experiments the FL, security, matrix and CLI tests share: a tiny config on the
embedded digits, records without their timings, a stateful run, a 2 x 2 matrix."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

TIMES = ("round_time_s", "aggregation_time_s", "train_time_s", "eval_time_s")


def tiny(**sections) -> dict:
    """10 iid clients on 2,000 digits, logistic regression, 3 rounds; ``sections`` merged in."""
    raw = {"data_args": {"dataset": "digits", "partition_method": "iid", "train_size": 2000,
                         "test_size": 1000},
           "model_args": {"model": "lr"},
           "train_args": {"client_num_in_total": 10, "client_num_per_round": 10,
                          "comm_round": 3, "batch_size": 20, "learning_rate": 0.1}}
    for name, body in sections.items():
        raw[name] = {**raw.get(name, {}), **body}
    return raw


def without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in records]


BYZANTINE = {"enable_attack": True, "attack_type": "byzantine", "attack_mode": "random",
             "byzantine_client_num": 2}


STATEFUL = tiny(attack_args=BYZANTINE,
                defense_args={"enable_defense": True, "defense_type": "foolsgold"},
                train_args={"federated_optimizer": "FedOpt", "server_optimizer": "adam",
                            "server_lr": 0.05, "comm_round": 5})


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


KRUM = {"enable_defense": True, "defense_type": "krum", "byzantine_client_num": 2,
        "krum_param_m": 5}


QUOTE = "Krum exhibits resilience, effectively neutralizing the negative impact of the attacks"
SETTING = {"dataset": {"paper": "CIFAR-10", "here": "digits", "why": "shipped with fedsec"},
           "model": {"paper": "ResNet-20", "here": "lr", "why": "fast on a CPU"},
           "clients": {"paper": 10, "here": 10}, "malicious": {"paper": 1, "here": 2,
                                                               "why": "a stronger attack"},
           "m": {"paper": 5, "here": 5},
           "rounds": {"paper": "not stated", "here": 2, "why": "a test"}}


def write_matrix(folder, **extra):
    (folder / "base.yaml").write_text(yaml.safe_dump(tiny(train_args={"comm_round": 2})))
    matrix = {"title": "Tiny: Byzantine vs m-Krum", "base": "base.yaml", "seeds": 2,
              "axes": {"attack": {"none": {"attack_args": {"enable_attack": False}},
                                  "byzantine": {"attack_args": BYZANTINE}},
                       "defense": {"fedavg": {"defense_args": {"enable_defense": False}},
                                   "m-krum": {"defense_args": KRUM}}},
              "setting": SETTING,
              "claims": [{"claim": "m-Krum restores accuracy under Byzantine clients",
                          "source": "FedMLSecurity, Exp3, Section 5.1",
                          "quote": QUOTE, "expected": "holds",
                          "metric": "final_test_accuracy",
                          "left": {"attack": "byzantine", "defense": "m-krum"}, "op": ">=",
                          "right": {"attack": "none", "defense": "fedavg"}, "margin": -0.2},
                         {"claim": "Byzantine clients do not hurt FedAvg", "source": "none",
                          "expected": "holds", "metric": "final_test_accuracy",
                          "left": {"attack": "byzantine", "defense": "fedavg"}, "op": ">=",
                          "right": {"attack": "none", "defense": "fedavg"}, "margin": -0.05,
                          "note": "random models weigh 2/10 of the average here"}],
              **extra}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(matrix, sort_keys=False))
    return path


def shipped_matrix_paths() -> list[Path]:
    """Every matrix config shipped: configs/paper/ (those with axes, or extending another) and
    the all-against-all table, configs/sok.yaml."""
    configs = Path(__file__).resolve().parents[2] / "configs"
    paper = [p for p in sorted((configs / "paper").glob("*.yaml"))
             if {"axes", "extends"} & set(yaml.safe_load(p.read_text()))]
    return [*paper, configs / "sok.yaml"]
