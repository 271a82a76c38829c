"""The attack schedule every attack shares (fedsec.security.schedule): the window of rounds
(attack_start_round, attack_end_round, attack_frequency) applied by the pipeline for model
poisoning, data poisoning and reconstruction alike; fixed or per-round malicious clients; the
defaults that keep every attack's former behaviour; bad input refused when the config is
parsed, naming the key, the value and what is allowed."""
from __future__ import annotations

import re

import numpy as np
import pytest

from fedsec.fl import Experiment, parse_config
from fedsec.security import Attack, Federation, RoundContext, build_attack
from fedsec.security.attacks._common import fixed_clients
from fedsec.security.registry import names
from fedsec.security.pipeline import reconstruct_data
from fedsec.security.schedule import AttackWindow

from support.aggregation import names as message_names


def run(attack: dict, rounds: int = 8, total: int = 6, per_round: int = 6) -> list[dict]:
    """A few tiny rounds of logistic regression on the digits."""
    raw = {"data_args": {"dataset": "digits", "partition_method": "iid", "train_size": 240,
                         "test_size": 60},
           "model_args": {"model": "lr"},
           "train_args": {"client_num_in_total": total, "client_num_per_round": per_round,
                          "comm_round": rounds, "batch_size": 20, "learning_rate": 0.1},
           "validation_args": {"frequency_of_the_test": rounds},
           "attack_args": {"enable_attack": True, **attack}}
    return list(Experiment(parse_config(raw)).rounds())


def attacked_rounds(records: list[dict]) -> list[int]:
    return [r["round"] for r in records if r.get("malicious_clients")]


# --- the window ----------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", [
    {"attack_type": "byzantine", "attack_mode": "zero", "byzantine_client_num": 2},
    {"attack_type": "min_max", "byzantine_client_num": 2},
    {"attack_type": "label_flipping", "poisoned_client_num": 2},
])
def test_attacks_run_exactly_in_the_window(attack):
    records = run({**attack, "attack_start_round": 1, "attack_end_round": 5,
                   "attack_frequency": 2})
    assert attacked_rounds(records) == [1, 3, 5]


def test_open_window_runs_to_the_end_and_defaults_run_every_round():
    assert attacked_rounds(run({"attack_type": "byzantine", "attack_start_round": 5})) == [5, 6, 7]
    assert attacked_rounds(run({"attack_type": "byzantine"}, rounds=3)) == [0, 1, 2]


def test_window_applies_to_reconstruction_and_to_every_hook():
    atk = build_attack({"enable_attack": True, "attack_type": "dlg", "attack_start_round": 2,
                        "attack_frequency": 3}, Federation(4, 4))
    window = atk.params
    assert [r for r in range(10) if window.attacks_in(r)] == [2, 5, 8]
    calls = []
    atk.reconstruct_data = lambda models, g, ctx: calls.append(ctx.round_index)
    for r in range(6):
        reconstruct_data(atk, [], {}, RoundContext(r, [], np.random.default_rng(r)))
    assert calls == [2, 5]


def test_every_built_in_attack_has_the_window():
    for name in names(Attack):
        cls = build_attack({"enable_attack": True, "attack_type": name}, Federation(10, 10))
        assert isinstance(cls.params, AttackWindow), name


# --- malicious selection --------------------------------------------------------------------------

def test_fixed_selection_keeps_the_same_ids_among_the_sampled_clients():
    records = run({"attack_type": "byzantine", "byzantine_client_num": 3,
                   "malicious_selection": "fixed", "seed": 4}, total=10, per_round=5)
    fixed = fixed_clients(4, 10, 3)
    for r in records:
        assert r.get("malicious_clients", []) == sorted(fixed & set(r["clients"]))
    assert len({tuple(r["clients"]) for r in records}) > 1, "the sampling never changed"
    everyone = run({"attack_type": "ipm", "byzantine_client_num": 2,
                    "malicious_selection": "fixed"}, rounds=4)
    assert all(r["malicious_clients"] == sorted(fixed_clients(0, 6, 2)) for r in everyone)


def test_per_round_selection_redraws_for_model_and_data_poisoning():
    byzantine = run({"attack_type": "byzantine", "byzantine_client_num": 2})
    assert len({tuple(r["malicious_clients"]) for r in byzantine}) > 1
    flipping = run({"attack_type": "label_flipping", "poisoned_client_num": 2,
                    "malicious_selection": "per_round"})
    assert len({tuple(r["malicious_clients"]) for r in flipping}) > 1
    assert all(len(r["malicious_clients"]) == 2 for r in flipping)


def test_defaults_keep_each_attacks_former_selection():
    """Model poisoning redraws each round (per_round), label flipping keeps the set its seed
    drew once (fixed), as before the schedule existed."""
    fed = Federation(20, 6)
    byzantine = build_attack({"enable_attack": True, "attack_type": "byzantine"}, fed)
    flipping = build_attack({"enable_attack": True, "attack_type": "label_flipping",
                             "poisoned_client_num": 4, "seed": 3}, fed)
    assert byzantine.params.malicious_selection == "per_round"
    assert flipping.params.malicious_selection == "fixed"
    order = np.random.default_rng([3]).permutation(20)
    ctx = RoundContext(7, list(range(6)), np.random.default_rng(0))
    assert {c for c in range(20) if flipping.is_malicious(c, ctx)} == set(int(c) for c in order[:4])


def test_model_replacement_fixed_attacker():
    fed = Federation(6, 6)
    atk = build_attack({"enable_attack": True, "attack_type": "model_replacement",
                        "malicious_selection": "fixed", "seed": 2}, fed)
    (attacker,) = fixed_clients(2, 6, 1)
    for r in range(5):
        ctx = RoundContext(r, list(range(6)), np.random.default_rng(r))
        assert atk.attacker_id(ctx) == attacker


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,patterns", [
    ({"attack_type": "byzantine", "attack_start_round": 5, "attack_end_round": 3},
     ["attack_args.attack_start_round=5", "attack_end_round=3"]),
    ({"attack_type": "min_max", "attack_frequency": 0},
     ["attack_args.attack_frequency=0", ">= 1"]),
    ({"attack_type": "label_flipping", "attack_start_round": -1},
     ["attack_args.attack_start_round=-1", ">= 0"]),
    ({"attack_type": "fang", "fang_target": "bulyan"},
     ["attack_args.fang_target='bulyan'", "krum, trimmed_mean, median"]),
    ({"attack_type": "min_sum", "perturbation": "gauss"},
     ["attack_args.perturbation='gauss'", "unit_vec, std, sign"]),
    ({"attack_type": "ipm", "malicious_selection": "always"},
     ["attack_args.malicious_selection='always'", "fixed, per_round"]),
    ({"attack_type": "mimic", "attacker_knowledge": "omniscient"},
     ["attack_args.attacker_knowledge='omniscient'", "full, partial"]),
    ({"attack_type": "fang", "byzantine_client_num": 3},
     ["attack_args.byzantine_client_num=3", "fang_target=krum", "client_num_per_round=6"]),
    ({"attack_type": "alie", "alie_optimal": True, "z": 1.0},
     ["attack_args.z=1.0", "alie_optimal"]),
])
def test_bad_input_is_refused_when_the_config_is_parsed(args, patterns):
    raw = {"train_args": {"client_num_in_total": 6, "client_num_per_round": 6},
           "attack_args": {"enable_attack": True, **args}}
    with pytest.raises(ValueError, match=message_names(*map(re.escape, patterns))):
        parse_config(raw)


def test_fedsec_list_shows_the_knowledge_and_the_schedule_keys(capsys):
    from fedsec.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    block = out.split("\n  min_max ", 1)[1].split("\n  min_sum ", 1)[0]
    assert "knowledge: full or partial (attacker_knowledge)" in block
    for key in ("attack_start_round = 0", "attack_end_round = None", "attack_frequency = 1",
                "malicious_selection = 'per_round'", "attacker_knowledge = 'full'",
                "perturbation = 'unit_vec'  (one of unit_vec, std, sign)"):
        assert key in block, key
