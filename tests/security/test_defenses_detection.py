"""The detection defenses in short real FL runs on the embedded digits (10 iid clients, logistic
regression, a few rounds), each against the attack its paper targets, with what it must show
fixed before the runs:

- defended final test accuracy >= the clean run's after as many rounds, minus CLEAN_MARGIN;
- a backdoor that reaches more than BACKDOOR_WORKS undefended ends below BACKDOOR_STOPPED;
- "excluded the attacker": the attackers are in the round's excluded clients in every round
  named (FLDetector: every round from its detection on, which comes by round 2N + 1);
- FLDetector's state survives a checkpoint: a run resumed from it gives the uninterrupted
  run's records, and its history stays within the window;
- bad parameters are refused when the config is parsed, naming the key and the value.
"""
from __future__ import annotations

import functools
import io

import numpy as np
import pytest
import torch

import fedsec
from fedsec.fl import Experiment, parse_config
from fedsec.security import Federation, RoundContext, Setting, Stage, build_defense
from fedsec.security.attacks.label_flipping import LabelFlippingAttack
from fedsec.security.base import client_id

from support.experiments import tiny, without_times

CLEAN_MARGIN = 0.03
BACKDOOR_WORKS, BACKDOOR_STOPPED = 0.9, 0.1

BYZANTINE = {"enable_attack": True, "attack_type": "byzantine", "attack_mode": "random",
             "byzantine_client_num": 2}
SCALING = {"enable_attack": True, "attack_type": "model_replacement", "malicious_client_id": 3,
           "trigger_size": 4}
FLIPPING = {"enable_attack": True, "attack_type": "label_flipping", "poisoned_client_num": 3,
            "original_class_list": [3, 2], "target_class_list": [9, 1]}


def defense(name: str, **params) -> dict:
    return {"enable_defense": True, "defense_type": name, **params}


def run(rounds: int, **sections) -> list[dict]:
    train = {"comm_round": rounds, **sections.pop("train_args", {})}
    return list(Experiment(parse_config(tiny(train_args=train, **sections))).rounds())


@functools.lru_cache(maxsize=None)
def clean_accuracy(rounds: int) -> float:
    return run(rounds)[-1]["test_accuracy"]


@functools.lru_cache(maxsize=None)
def undefended_backdoor(rounds: int, poisoned_fraction: float) -> float:
    return run(rounds, attack_args={**SCALING, "poisoned_fraction": poisoned_fraction}
               )[-1]["backdoor_accuracy"]


def excluded(record: dict) -> set[int]:
    return set(record.get("excluded_clients", []))


def assert_backdoor_stopped(records: list[dict], poisoned_fraction: float = 0.5) -> None:
    assert undefended_backdoor(len(records), poisoned_fraction) > BACKDOOR_WORKS
    assert records[-1]["backdoor_accuracy"] < BACKDOOR_STOPPED
    assert records[-1]["test_accuracy"] >= clean_accuracy(len(records)) - CLEAN_MARGIN


# --- FLDetector -----------------------------------------------------------------------------------

WINDOW = 2


def test_fldetector_detects_the_scaling_attacker_and_restarts_without_it():
    records = run(8, attack_args=SCALING,
                  defense_args=defense("fldetector", fldetector_window=WINDOW))
    detected_at = next(r["round"] for r in records if 3 in excluded(r))
    assert detected_at <= 2 * WINDOW + 1
    assert records[detected_at].get("fldetector_restarted") is True
    assert all(3 in excluded(r) for r in records[detected_at:])
    assert all(excluded(r) <= {3} for r in records)  # no honest client excluded
    assert undefended_backdoor(8, 0.5) > BACKDOOR_WORKS
    assert records[-1]["backdoor_accuracy"] < BACKDOOR_STOPPED
    # training restarted after the detection round: compare with as many clean rounds
    since_restart = len(records) - detected_at - 1
    assert records[-1]["test_accuracy"] >= clean_accuracy(since_restart) - CLEAN_MARGIN


def test_fldetector_state_resumes_exactly_and_stays_within_the_window():
    config = parse_config(tiny(attack_args=SCALING, train_args={"comm_round": 7},
                               defense_args=defense("fldetector", fldetector_window=WINDOW,
                                                    fldetector_restart=False)))
    straight = Experiment(config)
    records = list(straight.rounds())
    assert len(straight.defense.weight_diffs) == WINDOW
    assert all(len(w) <= WINDOW for w in straight.defense.windows.values())
    first = Experiment(config)
    head = [first.run_round() for _ in range(4)]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Experiment(config)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    tail = list(resumed.rounds())
    assert without_times(head + tail) == without_times(records)


# --- DeepSight, RFLBAT, residual-based reweighting (backdoors) ------------------------------------

def test_deepsight_rejects_the_backdoored_model_and_stops_the_backdoor():
    attack = {**SCALING, "poisoned_fraction": 1.0}
    records = run(4, attack_args=attack,
                  defense_args=defense("deepsight", deepsight_input_shape=[1, 28, 28],
                                       deepsight_samples=500))
    assert all(3 in excluded(r) for r in records)
    assert sum(len(excluded(r) - {3}) for r in records) <= 1  # honest rejections, all rounds
    assert all(r["deepsight_ddifs"] == "computed" for r in records)
    assert_backdoor_stopped(records, poisoned_fraction=1.0)


def test_rflbat_removes_the_backdoored_update():
    records = run(4, attack_args=SCALING, defense_args=defense("rflbat"))
    assert all(3 in excluded(r) for r in records)
    assert_backdoor_stopped(records)


def test_residual_reweighting_gives_the_scaled_update_almost_no_weight():
    records = run(4, attack_args=SCALING, defense_args=defense("residual_based_reweighting"))
    for r in records:
        weights = {int(c): w for c, w in r["client_weights"].items()}
        honest = min(w for c, w in weights.items() if c != 3)
        assert weights[3] < 0.2 * honest, weights
    assert_backdoor_stopped(records)


# --- Auror (label flipping), LASA and FedML's three sigma (Byzantine, sybils) ---------------------

def test_auror_excludes_exactly_the_label_flippers():
    records = run(4, attack_args=FLIPPING, defense_args=defense("auror"))
    assert all(excluded(r) == set(r["malicious_clients"]) == {2, 4, 6} for r in records)
    assert all(not excluded(r) for r in run(4, defense_args=defense("auror")))


def test_lasa_keeps_no_layer_of_the_byzantine_clients():
    records = run(3, attack_args=BYZANTINE, defense_args=defense("lasa"))
    assert all(set(r["malicious_clients"]) <= excluded(r) for r in records)
    assert run(3, attack_args=BYZANTINE)[-1]["test_accuracy"] < clean_accuracy(3) - 0.3
    assert records[-1]["test_accuracy"] >= clean_accuracy(3) - CLEAN_MARGIN


def test_three_sigma_geo_excludes_exactly_the_byzantine_clients():
    records = run(3, attack_args=BYZANTINE, defense_args=defense("3sigma_geo"))
    assert all(excluded(r) == set(r["malicious_clients"]) for r in records)
    assert records[-1]["test_accuracy"] >= clean_accuracy(3) - CLEAN_MARGIN


class Sybils(LabelFlippingAttack):
    """Label-flipping sybils (FoolsGold's threat, Fung et al. 2020) that also coordinate their
    uploads: each sends the mean of the sybils' local models."""

    stages = frozenset({Stage.DATA_POISONING, Stage.MODEL_POISONING})

    def poison_model(self, models, global_model, ctx):
        bad = [i for i in range(len(models)) if self.is_malicious(client_id(ctx, i), ctx)]
        shared = fedsec.mean([models[i][1] for i in bad])
        return [(c, {k: v.clone() for k, v in shared.items()}) if i in bad else (c, s)
                for i, (c, s) in enumerate(models)]


def test_three_sigma_foolsgold_excludes_the_sybils_with_the_robust_fit():
    sybils = {**FLIPPING, "attack_type": f"{__name__}:Sybils"}
    robust = run(4, attack_args=sybils, defense_args=defense("3sigma_foolsgold", robust=True))
    assert all(excluded(r) == set(r["malicious_clients"]) == {2, 4, 6} for r in robust)
    # FedML's fit (mean, sample std): the three sybils' own scores widen sigma so much that
    # the 2-sigma bound lies below them
    fedml = run(4, attack_args=sybils, defense_args=defense("3sigma_foolsgold"))
    assert all(not excluded(r) for r in fedml)


# --- bad input ------------------------------------------------------------------------------------

FED = Federation(client_num_in_total=20, client_num_per_round=10)


@pytest.mark.parametrize("name,params,words", [
    ("fldetector", {"fldetector_window": 0}, ["fldetector_window=0", ">= 1"]),
    ("fldetector", {"fldetector_k_max": 1}, ["fldetector_k_max=1", ">= 2"]),
    ("fldetector", {"fldetector_restart": "yes"}, ["fldetector_restart", "'yes'"]),
    ("deepsight", {"deepsight_tau": 0}, ["deepsight_tau=0"]),
    ("deepsight", {"deepsight_input_shape": [1, 0, 28]}, ["deepsight_input_shape[1]=0"]),
    ("deepsight", {"deepsight_min_cluster_size": 1}, ["deepsight_min_cluster_size=1", ">= 2"]),
    ("auror", {"auror_tau": 1.5}, ["auror_tau=1.5"]),
    ("auror", {"auror_alpha": -0.1}, ["auror_alpha=-0.1"]),
    ("rflbat", {"rflbat_eps1": 0}, ["rflbat_eps1=0"]),
    ("rflbat", {"rflbat_gap_references": 0}, ["rflbat_gap_references=0"]),
    ("residual_based_reweighting", {"thresh": 2}, ["thresh=2"]),
    ("residual_based_reweighting", {"lambda_param": 0}, ["lambda_param=0"]),
    ("lasa", {"lasa_sparsity": 1.0}, ["lasa_sparsity=1.0", "[0, 1)"]),
    ("lasa", {"lasa_lambda_n": float("nan")}, ["lasa_lambda_n"]),
    ("3sigma_geo", {"pretraining_round_num": 1}, ["pretraining_round_num=1", ">= 2"]),
    ("3sigma_foolsgold", {"threshold_sigma": -1}, ["threshold_sigma=-1"]),
    ("lasa", {"lasa_gamma": 1}, ["lasa_gamma", "valid keys"]),
])
def test_bad_parameters_are_refused_with_key_and_value(name, params, words):
    with pytest.raises(ValueError) as err:
        build_defense(defense(name, **params), FED)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_residual_reweighting_needs_three_clients_per_round():
    with pytest.raises(ValueError, match="client_num_per_round >= 3.*got 2"):
        build_defense(defense("residual_based_reweighting"), Federation(10, 2))


def test_deepsight_without_an_input_shape_says_which_key_to_set():
    """Outside a run nothing gives one input's shape (no setting.input_shape, no client
    batches); in a run it is the data's."""
    deepsight = build_defense(defense("deepsight", deepsight_samples=10), Federation(4, 4))
    deepsight.setup(Setting(model_factory=lambda: torch.nn.Linear(4, 3)))
    gen = torch.Generator().manual_seed(0)
    g = {"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}
    models = [(1.0, {k: torch.randn(v.shape, generator=gen) for k, v in g.items()})
              for _ in range(4)]
    ctx = RoundContext(0, [0, 1, 2, 3], np.random.default_rng(0))
    with pytest.raises(ValueError, match="deepsight_input_shape"):
        deepsight.defend_before_aggregation(models, g, ctx)
    (record,) = run(1, defense_args=defense("deepsight", deepsight_samples=10))
    assert record["deepsight_ddifs"] == "computed"
