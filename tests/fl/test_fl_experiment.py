"""The FL loop end to end on the embedded data: every model for a round, determinism, attacks
that hurt and defenses that help (fixed seeds, margins far above run-to-run noise), the
backdoor's success rate, DLG inside a run, non-finite updates, two experiments side by side."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from fedsec.fl import Experiment, parse_config
from fedsec.security import Attack, Defense, Stage

from support.experiments import BYZANTINE, tiny, without_times

def run(raw: dict) -> list[dict]:
    return list(Experiment(parse_config(raw)).rounds())


@pytest.mark.parametrize("model,dataset,options", [
    ("lr", "digits", {}),
    ("cnn", "digits", {}),
    ("lenet5", "digits", {}),
    ("resnet20", "digits", {"norm": "group"}),
    ("bilstm", "shakespeare_plays", {"hidden_size": 16, "embedding_dim": 8}),
    ("transformer", "shakespeare_plays", {"d_model": 32, "num_heads": 2}),
])
def test_each_model_trains_for_a_round(model, dataset, options):
    raw = tiny(data_args={"dataset": dataset, "train_size": 120, "test_size": 60,
                          "sequence_length": 20},
               model_args={"model": model, **options},
               train_args={"client_num_in_total": 3, "client_num_per_round": 3,
                           "comm_round": 1, "batch_size": 20, "learning_rate": 0.05})
    experiment = Experiment(parse_config(raw))
    before = {k: v.clone() for k, v in experiment.global_model.items()}
    (record,) = list(experiment.rounds())
    assert record["round"] == 0 and record["clients"] == [0, 1, 2]
    assert 0.0 <= record["test_accuracy"] <= 1.0 and math.isfinite(record["test_loss"])
    assert math.isfinite(record["train_loss"]) and record["aggregation_time_s"] > 0
    assert record["round_time_s"] >= record["train_time_s"] + record["eval_time_s"]
    assert any(not torch.equal(before[k], v) for k, v in experiment.global_model.items())
    if model == "transformer":
        assert record["test_perplexity"] == pytest.approx(math.exp(record["test_loss"]))


def test_same_config_and_seed_give_the_same_numbers():
    raw = tiny(attack_args=BYZANTINE, train_args={"client_num_per_round": 6},
               data_args={"partition_method": "hetero"})
    first, second = run(raw), run(raw)
    assert without_times(first) == without_times(second)
    other = run({**raw, "common_args": {"random_seed": 1}})
    assert without_times(other) != without_times(first)


def test_partial_participation_samples_reproducibly_without_replacement():
    experiment = Experiment(parse_config(tiny(train_args={"client_num_per_round": 4,
                                                          "comm_round": 5})))
    picks = [experiment.sample_clients(r) for r in range(5)]
    assert all(len(p) == len(set(p)) == 4 and p == sorted(p) for p in picks)
    assert len({tuple(p) for p in picks}) > 1
    assert picks == [Experiment(parse_config(tiny(train_args={"client_num_per_round": 4})))
                     .sample_clients(r) for r in range(5)]


def test_byzantine_attack_hurts_and_krum_restores_accuracy():
    clean = run(tiny())
    attacked = run(tiny(attack_args=BYZANTINE))
    defended = run(tiny(attack_args=BYZANTINE,
                        defense_args={"enable_defense": True, "defense_type": "krum",
                                      "byzantine_client_num": 2, "krum_param_m": 5}))
    clean_acc = clean[-1]["test_accuracy"]
    assert clean_acc > 0.75
    assert attacked[-1]["test_accuracy"] < clean_acc - 0.3
    assert defended[-1]["test_accuracy"] > clean_acc - 0.03
    for record in defended:  # every round's attackers were among the excluded
        assert len(record["malicious_clients"]) == 2
        assert set(record["malicious_clients"]) <= set(record["excluded_clients"])
        assert len(record["excluded_clients"]) == 5


def test_backdoor_success_rate_is_reported_each_round_and_krum_stops_it():
    attack = {"enable_attack": True, "attack_type": "model_replacement",
              "malicious_client_id": 3, "trigger_size": 4}
    backdoored = run(tiny(attack_args=attack, train_args={"comm_round": 4}))
    defended = run(tiny(attack_args=attack, train_args={"comm_round": 4},
                        defense_args={"enable_defense": True, "defense_type": "krum",
                                      "byzantine_client_num": 1, "krum_param_m": 5}))
    assert all("backdoor_accuracy" in r and "test_accuracy" in r for r in backdoored)
    assert all(r["malicious_clients"] == [3] for r in backdoored)
    assert min(r["backdoor_accuracy"] for r in backdoored) > 0.9
    assert defended[-1]["backdoor_accuracy"] < 0.1
    assert all(3 in r["excluded_clients"] for r in defended)
    assert defended[-1]["test_accuracy"] > 0.75


def test_label_flipping_poisons_only_the_malicious_clients_data():
    attack = {"enable_attack": True, "attack_type": "label_flipping",
              "original_class_list": [3, 2], "target_class_list": [9, 1],
              "poisoned_client_num": 3}
    records = run(tiny(attack_args=attack, train_args={"comm_round": 1}))
    flipped = records[0]["label_flipping_flipped"]
    assert sorted(int(c) for c in flipped) == records[0]["malicious_clients"]
    assert len(flipped) == 3 and all(n > 0 for n in flipped.values())


def test_dlg_reconstructs_a_client_batch_inside_a_run(tmp_path):
    """One sample per client and one local SGD step: the server's update is that sample's
    gradient, which DLG inverts (Zhu et al. 2019)."""
    attack = {"enable_attack": True, "attack_type": "dlg", "dlg_restarts": 4,
              "save_dir": str(tmp_path)}
    (record,) = run(tiny(attack_args=attack, data_args={"train_size": 10},
                         train_args={"comm_round": 1}))
    report = record["dlg"]
    assert report["client_id"] == 0 and report["label_accuracy"] == 1.0
    assert report["psnr"] > 40 and report["gradient_distance"] < 1e-6
    assert len(list(tmp_path.glob("dlg_round0_client0_*_reconstructed.png"))) == 1


class NanForClientOne(Attack):
    """Client 1 sends NaN everywhere."""

    stages = frozenset({Stage.MODEL_POISONING})

    def poison_model(self, models, global_model, ctx):
        out = list(models)
        count, state = out[1]
        out[1] = (count, {k: torch.full_like(v, math.nan) for k, v in state.items()})
        return out


class NanAggregate(Defense):
    """An aggregation that breaks: its output is NaN."""

    stages = frozenset({Stage.ON_AGGREGATION})

    def defend_on_aggregation(self, models, global_model, ctx):
        return {k: torch.full_like(v, math.nan) for k, v in global_model.items()}


def test_a_nan_update_never_reaches_the_global_model():
    name = f"{__name__}:NanForClientOne"
    experiment = Experiment(parse_config(tiny(attack_args={"enable_attack": True,
                                                            "attack_type": name})))
    records = list(experiment.rounds())
    assert all(r["excluded_clients"] == [1] for r in records)
    assert "non-finite" in records[0]["exclusion_reasons"]["1"]
    assert all(bool(torch.isfinite(v).all()) for v in experiment.global_model.values())
    assert records[-1]["test_accuracy"] > 0.75

    broken = Experiment(parse_config(tiny(defense_args={
        "enable_defense": True, "defense_type": f"{__name__}:NanAggregate"})))
    start = {k: v.clone() for k, v in broken.global_model.items()}
    record = broken.run_round()
    assert "previous global model is kept" in record["global_model_rejected"]
    assert all(torch.equal(start[k], v) for k, v in broken.global_model.items())



def test_a_rule_that_cannot_aggregate_keeps_the_global_model_and_says_why():
    """Bulyan (n >= 4f + 3) with 2 of 11 uploads infinite: 9 finite ones are too few for f = 2
    (and MoNNA cannot trust an infinite update), so each round keeps the global model and
    records the rule's reason; the run goes on."""
    import fedsec

    updates = torch.randn(11, 5)
    updates[:2] = math.inf
    with pytest.raises(fedsec.CannotAggregateError,
                       match=r"bulyan needs n >= 4f \+ 3; got n=9, f=2 \(2 of 11 excluded as "
                             r"non-finite\)"):
        fedsec.bulyan(updates, f=2)
    with pytest.raises(fedsec.CannotAggregateError,
                       match="monna: the trusted client 0's update holds non-finite values"):
        fedsec.monna(updates, f=2, trusted=0)
    assert issubclass(fedsec.CannotAggregateError, ValueError)  # the drop-in contract
    experiment = Experiment(parse_config(tiny(
        train_args={"client_num_in_total": 11, "client_num_per_round": 11, "comm_round": 2},
        attack_args={"enable_attack": True, "attack_type": "inf", "byzantine_client_num": 2},
        defense_args={"enable_defense": True, "defense_type": "bulyan",
                      "byzantine_client_num": 2})))
    start = {k: v.clone() for k, v in experiment.global_model.items()}
    records = list(experiment.rounds())
    assert len(records) == 2
    for record in records:
        assert record["aggregation_refused"] == (
            "bulyan needs n >= 4f + 3; got n=9, f=2 (2 of 11 excluded as non-finite); the "
            "previous global model is kept")
    assert all(torch.equal(start[k], v) for k, v in experiment.global_model.items())

def test_two_experiments_interleaved_in_one_process_do_not_share_state():
    """FoolsGold keeps per-client histories and FedOpt its moments: stepping two experiments
    round by round in turn gives what each gives alone."""
    raw = tiny(attack_args=BYZANTINE, defense_args={"enable_defense": True,
                                                    "defense_type": "foolsgold"},
               train_args={"federated_optimizer": "FedOpt", "server_lr": 0.05})
    other = copy.deepcopy(raw)
    other["common_args"] = {"random_seed": 5}
    alone_a, alone_b = run(raw), run(other)
    a, b = Experiment(parse_config(raw)), Experiment(parse_config(other))
    together_a, together_b = [], []
    for _ in range(3):
        together_a.append(a.run_round())
        together_b.append(b.run_round())
    assert without_times(together_a) == without_times(alone_a)
    assert without_times(together_b) == without_times(alone_b)


@pytest.mark.parametrize("optimizer", ["FedProx", "FedNova", "FedOpt"])
def test_every_federated_optimizer_learns(optimizer):
    records = run(tiny(train_args={"federated_optimizer": optimizer, "server_lr": 1.0 if
                                   optimizer != "FedOpt" else 0.03,
                                   "server_optimizer": "adam"},
                       data_args={"partition_method": "hetero"}))
    assert records[-1]["test_accuracy"] > 0.6
    assert np.isfinite([r["test_loss"] for r in records]).all()


def test_the_attacker_trains_with_its_own_epochs(monkeypatch):
    """Bagdasaryan et al.'s attacker trains the backdoor longer than the benign clients."""
    import fedsec.fl.experiment as experiment_module

    epochs_by_call = []
    real = experiment_module.train_local

    def spy(model, global_state, x, y, how, seed):
        epochs_by_call.append(how.epochs)
        return real(model, global_state, x, y, how, seed)

    monkeypatch.setattr(experiment_module, "train_local", spy)
    attack = {"enable_attack": True, "attack_type": "model_replacement",
              "malicious_client_id": 3, "malicious_epochs": 4}
    run(tiny(attack_args=attack, train_args={"comm_round": 1, "client_batching": "off"}))
    assert epochs_by_call == [1, 1, 1, 4, 1, 1, 1, 1, 1, 1]
