"""Experiment configs: FedML's sections and keys, defaults, overrides, and the clear errors
raised at load time (before any data is read or any client trains)."""
from __future__ import annotations

import pytest
import yaml

from fedsec.fl.config import ConfigError, load_config, parse_config
from fedsec.fl.runner import resolve_config

PAPER_STYLE = """
common_args: {random_seed: 3}
data_args: {dataset: digits, partition_method: hetero, partition_alpha: 0.1}
model_args: {model: cnn}
train_args: {federated_optimizer: FedAvg, client_num_in_total: 20, client_num_per_round: 10,
             comm_round: 5, epochs: 2, batch_size: 10, learning_rate: 0.03}
attack_args: {enable_attack: true, attack_type: byzantine, attack_mode: random,
              byzantine_client_num: 1}
defense_args: {enable_defense: true, defense_type: krum, krum_param_m: 5,
               byzantine_client_num: 1}
"""


def test_paper_style_yaml_parses_into_typed_sections():
    c = parse_config(yaml.safe_load(PAPER_STYLE))
    assert c.common.random_seed == 3
    assert (c.data.dataset, c.data.partition_method, c.data.partition_alpha) == \
        ("digits", "hetero", 0.1)
    assert c.model.model == "cnn" and dict(c.model.options) == {}
    assert (c.train.client_num_in_total, c.train.client_num_per_round, c.train.epochs) == \
        (20, 10, 2)
    assert c.attack.cls.name == "byzantine" and c.attack.params.byzantine_client_num == 1
    assert c.defense.cls.name == "krum" and c.defense.params.krum_param_m == 5
    assert c.federation.client_num_per_round == 10


def test_defaults_and_disabled_components():
    c = parse_config({})
    assert c.data.dataset == "digits" and c.model.model == "lr"
    assert c.train.federated_optimizer == "FedAvg" and c.attack is None and c.defense is None
    c = parse_config({"attack_args": {"enable_attack": False, "attack_type": "byzantine"}})
    assert c.attack is None


def test_resolved_config_round_trips_with_every_default_spelled_out():
    c = parse_config(yaml.safe_load(PAPER_STYLE))
    resolved = c.to_dict()
    assert resolved["train_args"]["server_optimizer"] == "adam"       # a default, written out
    assert resolved["attack_args"]["attack_mode"] == "random"
    assert resolved["model_args"] == {"model": "cnn"}
    again = parse_config(yaml.safe_load(yaml.safe_dump(resolved)))
    assert again.to_dict() == resolved


def test_model_options_sit_beside_the_model_name():
    c = parse_config({"model_args": {"model": "transformer", "d_model": 64, "num_layers": 1}})
    assert c.model.model == "transformer" and dict(c.model.options) == {"d_model": 64,
                                                                        "num_layers": 1}
    assert c.to_dict()["model_args"] == {"model": "transformer", "d_model": 64, "num_layers": 1}


def test_overrides_set_keys_as_yaml_values(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(PAPER_STYLE)
    c = load_config(path, ["train_args.comm_round=2", "defense_args.enable_defense=false",
                           "data_args.partition_method=iid"])
    assert c.train.comm_round == 2 and c.defense is None and c.data.partition_method == "iid"
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["comm_round=2"])


@pytest.mark.parametrize("raw,message", [
    ({"train_arg": {}}, "unknown config section 'train_arg'; valid: common_args"),
    ({"train_args": {"rounds": 3}}, "train_args: unknown key 'rounds'; valid keys: "
                                    "federated_optimizer"),
    ({"train_args": {"comm_round": "ten"}}, "train_args.comm_round must be an integer; got 'ten'"),
    ({"train_args": {"learning_rate": True}}, "train_args.learning_rate must be a number"),
    ({"train_args": {"comm_round": 0}}, "train_args.comm_round=0 must be >= 1"),
    ({"train_args": {"learning_rate": -0.1}}, "learning_rate=-0.1 must be a positive"),
    ({"train_args": {"client_num_in_total": 5, "client_num_per_round": 6}},
     "client_num_per_round=6 must be <= client_num_in_total=5"),
    ({"train_args": {"federated_optimizer": "fedavg"}},
     "federated_optimizer='fedavg' is not valid; valid: FedAvg, FedOpt, FedProx, FedNova"),
    ({"train_args": {"federated_optimizer": "FedNova", "client_optimizer": "adam"}},
     "FedNova normalises SGD steps"),
    ({"train_args": {"momentum": 1.0}}, "momentum=1.0 must be in \\[0, 1\\)"),
    ({"data_args": {"partition_method": "dirichlet"}},
     "partition_method='dirichlet' is not valid; valid: iid, hetero, natural"),
    ({"data_args": {"partition_alpha": 0}}, "partition_alpha=0.0 must be a positive"),
    ({"device_args": {"device": "gpu"}}, "device='gpu' is not valid; valid: cpu, cuda, auto"),
    ({"model_args": {"model": 3}}, "model_args.model must be a model name"),
    ({"defense_args": {"enable_defense": True, "defense_type": "krum",
                       "byzantine_client_num": 4}},
     "byzantine_client_num=4 is too large for client_num_per_round=10"),
    ({"defense_args": {"enable_defense": True, "defense_type": "kurm"}},
     "unknown defense_type 'kurm'; valid: "),
    ({"attack_args": {"enable_attack": True, "attack_type": "byzantine", "mode": "flip"}},
     "attack_args: unknown key 'mode' for attack_type 'byzantine'"),
])
def test_bad_configs_name_the_key_the_value_and_what_is_allowed(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_args: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load_config(bad)


def test_shipped_configs_resolve_by_name_and_all_parse():
    default = resolve_config("default")
    assert default.name == "default.yaml"
    for path in sorted(default.parent.rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "train_args" in raw:  # experiment configs (matrix configs are checked elsewhere)
            parse_config(raw)
    with pytest.raises(FileNotFoundError, match="neither a file nor a shipped config"):
        resolve_config("no_such_config")


def test_every_config_key_is_in_the_reference():
    import dataclasses
    from pathlib import Path

    from fedsec.fl.config import SECTIONS, ModelArgs

    doc = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text()
    for section, cls in SECTIONS.items():
        assert f"\n{section}:" in doc, section
        for f in dataclasses.fields(cls):
            if cls is ModelArgs and f.name == "options":
                continue
            assert f"\n  {f.name}:" in doc, f"{section}.{f.name} is not in docs/experiments.md"
