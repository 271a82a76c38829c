"""The defenses on the Gram-route rules (mda, monna, caf, smea, dnc, fltrust, flame, signguard,
clipped_clustering) in short real FL runs on the embedded digits (10 iid clients, logistic
regression, 4 rounds), each against the attack its paper targets, with what it must show
fixed before the runs:

- "excluded the attackers": the round's malicious clients are in its excluded_clients in
  every round (CAF: their weight is 0; FLTrust: together they hold less than their fair
  share f / n of the trust, where an unfiltered average gives them exactly f / n);
- defended final test accuracy >= the clean run's after as many rounds, minus CLEAN_MARGIN;
- a backdoor that reaches more than BACKDOOR_WORKS undefended ends below BACKDOOR_STOPPED;
- clipped clustering's history of norms survives a checkpoint (a resumed run gives the
  uninterrupted run's records);
- bad parameters are refused when the config is parsed, naming the key and the value.
"""
from __future__ import annotations

import functools
import io

import pytest
import torch

from fedsec.fl import Experiment, parse_config
from fedsec.security import Federation, build_defense

from support.experiments import tiny, without_times

ROUNDS = 4
CLEAN_MARGIN = 0.03
BACKDOOR_WORKS, BACKDOOR_STOPPED = 0.9, 0.1

BYZANTINE = {"enable_attack": True, "attack_type": "byzantine", "attack_mode": "random",
             "byzantine_client_num": 2}
SCALING = {"enable_attack": True, "attack_type": "model_replacement", "malicious_client_id": 3,
           "trigger_size": 4, "poisoned_fraction": 0.5}


def defense(name, **params) -> dict:
    return {"enable_defense": True, "defense_type": name, **params}


def experiment(rounds: int = ROUNDS, **sections) -> Experiment:
    train = {"comm_round": rounds, **sections.pop("train_args", {})}
    return Experiment(parse_config(tiny(train_args=train, **sections)))


def run(rounds: int = ROUNDS, **sections) -> list[dict]:
    return list(experiment(rounds, **sections).rounds())


@functools.lru_cache(maxsize=None)
def clean_accuracy(rounds: int = ROUNDS) -> float:
    return run(rounds)[-1]["test_accuracy"]


@functools.lru_cache(maxsize=None)
def undefended_backdoor(rounds: int = ROUNDS) -> float:
    return run(rounds, attack_args=SCALING)[-1]["backdoor_accuracy"]


def excluded(record: dict) -> set[int]:
    return set(record.get("excluded_clients", []))


def client_weights(record: dict) -> dict[int, float]:
    return {int(k): v for k, v in record["client_weights"].items()}


def malicious(record: dict) -> set[int]:
    return set(record["malicious_clients"])


def assert_accuracy_held(records: list[dict]) -> None:
    assert records[-1]["test_accuracy"] >= clean_accuracy(len(records)) - CLEAN_MARGIN, (
        f"accuracy {records[-1]['test_accuracy']} vs clean {clean_accuracy(len(records))}")


def assert_backdoor_stopped(records: list[dict]) -> None:
    assert undefended_backdoor(len(records)) > BACKDOOR_WORKS
    assert records[-1]["backdoor_accuracy"] < BACKDOOR_STOPPED
    assert_accuracy_held(records)


@pytest.mark.parametrize("name,params", [
    ("mda", {"byzantine_client_num": 2}),
    ("smea", {"byzantine_client_num": 2}),
    ("dnc", {"byzantine_client_num": 2, "dnc_subsample": 2000}),
    ("signguard", {}),
])
def test_byzantine_clients_excluded_every_round(name, params):
    records = run(attack_args=BYZANTINE, defense_args=defense(name, **params))
    for r in records:
        assert malicious(r) <= excluded(r), f"{name} round {r['round']}: {r}"
    assert_accuracy_held(records)


def test_caf_gives_the_byzantine_clients_no_weight():
    records = run(attack_args=BYZANTINE, defense_args=defense("caf", byzantine_client_num=2))
    for r in records:
        assert all(client_weights(r)[c] == 0 for c in malicious(r)), r
        assert malicious(r) <= excluded(r)
    assert_accuracy_held(records)


def test_monna_keeps_the_trusted_clients_neighbours():
    # A fixed malicious set (clients 4 and 6 for seed 0) that does not hold the trusted
    # client 0: MoNNA assumes the trusted client honest.
    attack = {**BYZANTINE, "malicious_selection": "fixed", "seed": 0}
    records = run(attack_args=attack, defense_args=defense("monna", byzantine_client_num=2,
                                                           monna_trusted_client=0))
    for r in records:
        assert malicious(r) == {4, 6} and malicious(r) <= excluded(r), r
    assert_accuracy_held(records)


def _share(record: dict) -> float:
    weights = client_weights(record)
    return sum(weights[c] for c in malicious(record)) / sum(weights.values())


def test_fltrust_holds_against_byzantine_clients():
    records = run(attack_args=BYZANTINE, defense_args=defense("fltrust"))
    for r in records:
        assert _share(r) < 2 / 10, f"round {r['round']}: attackers' trust share {_share(r)}"
    assert_accuracy_held(records)


def test_fltrust_stops_the_scaled_backdoor():
    assert_backdoor_stopped(run(attack_args=SCALING, defense_args=defense("fltrust")))


def test_flame_excludes_the_backdoor_and_stops_it():
    records = run(attack_args=SCALING, defense_args=defense("flame"))
    assert all(3 in excluded(r) for r in records)
    assert_backdoor_stopped(records)


def test_clipped_clustering_excludes_the_backdoor_and_holds_accuracy():
    records = run(attack_args=SCALING, defense_args=defense("clipped_clustering"))
    assert all(3 in excluded(r) for r in records)
    assert_backdoor_stopped(records)
    assert_accuracy_held(run(attack_args=BYZANTINE, defense_args=defense("clipped_clustering")))


def test_clipped_clustering_history_resumes_exactly():
    sections = {"attack_args": SCALING, "defense_args": defense("clipped_clustering")}
    straight = experiment(5, **sections)
    records = list(straight.rounds())
    assert len(straight.defense.norms) == 5 * 10
    first = experiment(5, **sections)
    head = [first.run_round() for _ in range(2)]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = experiment(5, **sections)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert without_times(head + list(resumed.rounds())) == without_times(records)


@pytest.mark.parametrize("rule", ["mda", "dnc", "flame"])
def test_chain_after_nnm_mixes_inside_the_rule(rule):
    """[nnm, rule]: the rule takes the chain's NNM through pre= (accepts_pre) and still
    leaves the Byzantine clients out of every round."""
    records = run(attack_args=BYZANTINE,
                  defense_args=defense(["nnm", rule], byzantine_client_num=2))
    for r in records:
        assert malicious(r) <= excluded(r), f"{rule} round {r['round']}: {r}"
    assert_accuracy_held(records)


def test_fltrust_draws_its_root_set_at_setup_and_refuses_one_larger_than_the_data():
    exp = Experiment(parse_config(tiny(defense_args=defense("fltrust", fltrust_root_size=50))))
    features, labels = exp.defense.root
    assert len(features) == len(labels) == 50
    rows = [int(torch.nonzero((exp.data.train_x == x).flatten(1).all(1))[0]) for x in features]
    assert rows == sorted(rows) and torch.equal(exp.data.train_y[rows], labels)
    with pytest.raises(ValueError, match="fltrust_root_size=5000 is more than the 2000"):
        Experiment(parse_config(tiny(defense_args=defense("fltrust", fltrust_root_size=5000))))
    alone = build_defense(defense("fltrust"), Federation(10, 10))
    with pytest.raises(ValueError, match="fltrust has no root set.*setting.training_data"):
        alone.server_update({}, None)


@pytest.mark.parametrize("params,pattern", [
    (defense("mda", byzantine_client_num=5), r"byzantine_client_num=5.*> 2f"),
    (defense("smea", byzantine_client_num=-1), r"byzantine_client_num=-1"),
    (defense("caf", byzantine_client_num=5), r"byzantine_client_num=5"),
    (defense("monna", monna_trusted_client=10), r"monna_trusted_client=10.*client_num_in_total=10"),
    (defense("dnc", byzantine_client_num=4, dnc_filter_frac=2.5), r"byzantine_client_num=4.*c=2.5"),
    (defense("dnc", dnc_subsample=0), r"dnc_subsample=0"),
    (defense("flame", flame_noise_lambda=-1.0), r"flame_noise_lambda=-1"),
    (defense("signguard", signguard_lower=3.0, signguard_upper=2.0),
     r"signguard_lower=3.*signguard_upper=2"),
    (defense("signguard", signguard_fraction=0.0), r"signguard_fraction=0"),
    (defense("fltrust", fltrust_root_size=0), r"fltrust_root_size=0"),
])
def test_bad_parameters_refused_at_parse_time(params, pattern):
    with pytest.raises(ValueError, match=pattern):
        parse_config(tiny(defense_args=params))


def test_monna_refuses_partial_participation():
    raw = tiny(defense_args=defense("monna", monna_trusted_client=0),
               train_args={"client_num_per_round": 5})
    with pytest.raises(ValueError, match=r"client_num_per_round=5.*client_num_in_total=10"):
        parse_config(raw)
