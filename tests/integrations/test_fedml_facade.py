"""The FedML-compatible facade (fedsec.integrations.fedml, docs/fedml.md), driven through the
calls FedML's server aggregator makes (fedml/core/alg_frame/server_aggregator.py:
on_before_aggregation, aggregate, on_after_aggregation), with FedML's flat argument object and
its lists of (sample_count, OrderedDict). The README section "Coming from FedML" runs as
written."""
from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch

from support.readme import readme_python_blocks
from fedsec.integrations.fedml import FedMLAttacker, FedMLDefender

README_SECTION = "Coming from FedML"
D = 10  # coordinates of every model


def fedml_args(**security) -> SimpleNamespace:
    """FedML's args as fedml.init() builds them: every YAML section's keys flat on one object
    (common_args, data_args, model_args, train_args, ...), plus the security keys."""
    return SimpleNamespace(
        training_type="simulation", random_seed=0, dataset="mnist", data_cache_dir="~/data",
        partition_method="hetero", partition_alpha=0.5, model="lr", federated_optimizer="FedAvg",
        client_num_in_total=5, client_num_per_round=5, comm_round=10, epochs=1, batch_size=10,
        client_optimizer="sgd", learning_rate=0.03, weight_decay=0.001, using_gpu=False,
        backend="sp", **security)


def fedml_agg(args, raw_grad_list):
    """FedML's FedMLAggOperator.agg for federated_optimizer FedAvg: the sample-weighted average,
    key by key. Records its calls."""
    fedml_agg.calls.append((args, len(raw_grad_list)))
    total = sum(count for count, _ in raw_grad_list)
    return OrderedDict((key, sum(count * model[key] for count, model in raw_grad_list) / total)
                       for key in raw_grad_list[0][1])


class FedMLServerAggregator:
    """The security calls of FedML's ServerAggregator, in its order, on the given instances."""

    def __init__(self, args, attacker: FedMLAttacker, defender: FedMLDefender):
        self.args, self.attacker, self.defender = args, attacker, defender
        attacker.init(args)
        defender.init(args)

    def round(self, raw_client_model_list, global_params):
        # on_before_aggregation
        if self.attacker.is_model_attack():
            raw_client_model_list = self.attacker.attack_model(
                raw_client_grad_list=raw_client_model_list, extra_auxiliary_info=global_params)
        if self.defender.is_defense_enabled():
            raw_client_model_list = self.defender.defend_before_aggregation(
                raw_client_grad_list=raw_client_model_list, extra_auxiliary_info=global_params)
        # aggregate
        if self.defender.is_defense_enabled():
            model = self.defender.defend_on_aggregation(
                raw_client_grad_list=raw_client_model_list, base_aggregation_func=fedml_agg,
                extra_auxiliary_info=global_params)
        else:
            model = fedml_agg(self.args, raw_client_model_list)
        # on_after_aggregation
        if self.defender.is_defense_enabled():
            model = self.defender.defend_after_aggregation(model)
        return model


@pytest.fixture(autouse=True)
def fresh_agg_calls():
    fedml_agg.calls = []


def local_models(values, counts=None) -> list:
    counts = counts or [10 * (i + 1) for i in range(len(values))]
    return [(count, OrderedDict(weight=torch.full((D,), float(v)), bias=torch.full((2,), float(v))))
            for count, v in zip(counts, values)]


GLOBAL = OrderedDict(weight=torch.zeros(D), bias=torch.zeros(2))
HONEST = [5.00, 5.01, 5.02, 5.03, 5.04]
KRUM_UNDER_ATTACK = dict(enable_attack=True, attack_type="byzantine", attack_mode="random",
                         byzantine_client_num=1, enable_defense=True, defense_type="krum",
                         krum_param_m=4)


def test_krum_excludes_the_byzantine_client_in_fedmls_call_sequence():
    args = fedml_args(**KRUM_UNDER_ATTACK)
    server = FedMLServerAggregator(args, FedMLAttacker.get_instance(),
                                   FedMLDefender.get_instance())
    assert server.attacker.is_attack_enabled() and server.attacker.is_model_poisoning_attack()
    assert server.defender.is_defense_before_aggregation()
    assert not server.defender.is_defense_on_aggregation()
    assert not server.defender.is_defense_after_aggregation()
    attackers = []
    for round_index in range(2):
        model = server.round(local_models(HONEST), GLOBAL)
        (bad,) = server.attacker.round_metrics["malicious_clients"]
        attackers.append(bad)
        # N(0, 1) noise is ~5 away from the honest models in every coordinate: Krum (f=1, m=4)
        # keeps the 4 honest ones and FedML's own aggregation averages them.
        assert server.defender.get_malicious_client_idxs() == [bad]
        honest = [i for i in range(5) if i != bad]
        assert server.defender.get_benign_client_idxs(range(5)) == honest
        weights = [10 * (i + 1) for i in honest]
        expected = sum(w * HONEST[i] for w, i in zip(weights, honest)) / sum(weights)
        assert fedml_agg.calls[round_index] == (args, 4)
        assert isinstance(model, OrderedDict) and list(model) == ["weight", "bias"]
        assert torch.allclose(model["weight"], torch.full((D,), expected), atol=1e-5)
    assert len(fedml_agg.calls) == 2
    # the attacker is drawn from (random_seed, round): another instance draws the same
    again = FedMLServerAggregator(args, FedMLAttacker(), FedMLDefender())
    for _ in range(2):
        again.round(local_models(HONEST), GLOBAL)
        assert again.attacker.round_metrics["malicious_clients"] == [attackers.pop(0)]


def test_median_ignores_the_outlier_without_the_base_aggregation():
    args = fedml_args(enable_defense=True, defense_type="coordinate_wise_median")
    server = FedMLServerAggregator(args, FedMLAttacker(), FedMLDefender())
    assert not server.attacker.is_attack_enabled() and not server.attacker.is_model_attack()
    assert server.defender.is_defense_on_aggregation()
    assert server.defender.get_defense_types() == "coordinate_wise_median"
    raw = local_models([0.0, 1.0, 100.0, 3.0, 7.0])
    assert server.defender.defend_before_aggregation(raw, GLOBAL) == raw  # no such stage
    model = server.round(raw, GLOBAL)
    assert torch.equal(model["weight"], torch.full((D,), 3.0))  # the median of 0, 1, 3, 7, 100
    assert fedml_agg.calls == []
    assert server.defender.get_malicious_client_idxs() == []


def test_a_chain_in_flat_args_reads_every_members_keys():
    chain = ["norm_diff_clipping", "coordinate_wise_median"]
    flat = fedml_args(enable_defense=True, defense_type=chain, norm_bound=2.0)
    nested = fedml_args(defense_args={"enable_defense": True, "defense_type": chain,
                                      "norm_bound": 2.0})
    raw = local_models([0.0, 1.0, 100.0, 3.0, 7.0])
    models = [FedMLServerAggregator(args, FedMLAttacker(), FedMLDefender()).round(raw, GLOBAL)
              for args in (flat, nested)]
    assert torch.equal(models[0]["weight"], models[1]["weight"])
    assert 0 < float(models[0]["weight"][0]) < 3.0  # clipped before the median


def test_two_instances_in_one_process_are_independent():
    krum, median = FedMLDefender(), FedMLDefender()
    krum.init(fedml_args(enable_defense=True, defense_type="krum", byzantine_client_num=1,
                         krum_param_m=1))
    median.init(fedml_args(enable_defense=True, defense_type="median"))
    raw = local_models([0.0, 1.0, 100.0, 3.0, 7.0])
    kept = krum.defend_before_aggregation(raw, GLOBAL)     # round 1 of krum
    median_model = median.defend_on_aggregation(raw, None, GLOBAL)  # round 1 of median
    krum_model = krum.defend_on_aggregation(kept, fedml_agg, GLOBAL)
    # Krum's single choice: 1 (its 2 nearest, 0 and 3, at squared distances 1 and 4 per coordinate)
    assert [count for count, _ in kept] == [20]
    assert torch.equal(krum_model["weight"], torch.full((D,), 1.0))
    assert torch.equal(median_model["weight"], torch.full((D,), 3.0))
    assert krum.get_malicious_client_idxs() == [0, 2, 3, 4]
    assert median.get_malicious_client_idxs() == []
    # re-initialising one leaves the other as it was, and neither is the default instance
    median.init(fedml_args())
    assert not median.is_defense_enabled() and krum.get_defense_types() == "krum"
    assert FedMLDefender.get_instance() is FedMLDefender.get_instance()
    assert FedMLDefender.get_instance() not in (krum, median)
    assert FedMLAttacker.get_instance() is not FedMLDefender.get_instance()


def test_rounds_follow_the_stage_order():
    defender = FedMLDefender()
    defender.init(fedml_args(enable_defense=True, defense_type="krum", byzantine_client_num=1,
                             krum_param_m=4))
    raw = local_models([0.0, 1.0, 100.0, 3.0, 7.0])
    kept = defender.defend_before_aggregation(raw, GLOBAL)
    with pytest.raises(ValueError, match=r"got 5 models, but this round kept 4"):
        defender.defend_on_aggregation(raw, fedml_agg, GLOBAL)
    defender.defend_on_aggregation(kept, fedml_agg, GLOBAL)
    first = defender.round_metrics
    defender.defend_before_aggregation(local_models(HONEST), GLOBAL)  # a new round
    assert defender.round_metrics is not first
    assert first["excluded_clients"] == [2]


def test_fedsecs_nested_sections_are_read_strictly():
    args = fedml_args(defense_args={"enable_defense": True, "defense_type": "krum",
                                    "krum_param_mm": 2})
    with pytest.raises(ValueError, match=r"unknown key 'krum_param_mm' for defense_type 'krum'; "
                                         r"valid keys: byzantine_client_num, krum_param_m"):
        FedMLDefender().init(args)
    attacker = FedMLAttacker()
    attacker.init(fedml_args(attack_args=SimpleNamespace(enable_attack=True,
                                                         attack_type="byzantine",
                                                         attack_mode="zero")))
    assert attacker.get_attack_types() == "byzantine"


@pytest.mark.parametrize("security, error, message", [
    (dict(enable_defense=True, defense_type="krum", byzantine_client_num=2), ValueError,
     r"byzantine_client_num=2 is too large for client_num_per_round=5: Krum needs"),
    (dict(enable_defense=True, defense_type="krumm"), ValueError,
     r"unknown defense_type 'krumm'; valid: .*krum"),
    (dict(enable_defense="yes", defense_type="krum"), ValueError,
     r"enable_defense must be true or false; got 'yes'"),
    (dict(enable_defense=True), ValueError, r"enable_defense is true but defense_type is missing"),
    (dict(enable_defense=True, defense_type="trimmed_mean", beta="0.1"), ValueError,
     r"beta must be a number; got '0.1'"),
])
def test_config_errors_are_fedsecs(security, error, message):
    with pytest.raises(error, match=message):
        FedMLDefender().init(fedml_args(**security))


def test_the_federation_must_be_in_args():
    args = fedml_args(enable_defense=True, defense_type="median")
    del args.client_num_per_round
    with pytest.raises(ValueError, match=r"args.client_num_per_round must be a positive integer"):
        FedMLDefender().init(args)


def test_bad_calls_say_what_is_wrong():
    idle = FedMLDefender()
    with pytest.raises(RuntimeError, match=r"no defense is enabled"):
        idle.defend_before_aggregation(local_models(HONEST), GLOBAL)
    with pytest.raises(RuntimeError, match=r"no model-poisoning attack is enabled"):
        FedMLAttacker().poison_model(local_models(HONEST), GLOBAL)
    krum = FedMLDefender()
    krum.init(fedml_args(enable_defense=True, defense_type="krum", krum_param_m=2))
    with pytest.raises(TypeError, match=r"raw_client_grad_list\[1\] must be a \(sample_count, "
                                        r"state_dict\) tuple"):
        krum.defend_before_aggregation([(1, GLOBAL), GLOBAL], GLOBAL)
    with pytest.raises(TypeError, match=r"the global model must be a state_dict"):
        krum.defend_before_aggregation(local_models(HONEST), None)


def test_readme_fedml_example_runs():
    (code,) = readme_python_blocks(README_SECTION)
    namespace = {"__name__": "readme_fedml_example"}
    exec(compile(code, f"README.md ({README_SECTION})", "exec"), namespace)
    (bad,) = namespace["attacker"].round_metrics["malicious_clients"]
    assert namespace["defender"].get_malicious_client_idxs() == [bad]
    honest = [1.0 + 0.01 * i for i in range(5) if i != bad]  # equal sample counts
    assert torch.allclose(namespace["global_model"]["weight"],
                          torch.full((10,), sum(honest) / 4), atol=1e-5)
