"""An experiment's YAML, parsed once into typed sections.

The sections and keys are FedML's (``common_args``, ``data_args``, ``model_args``,
``train_args``, ``validation_args``, ``device_args``, ``attack_args``, ``defense_args``), so a
FedMLSecurity config reads as written. Every key has a documented default; an unknown section
or key, a wrong type or an impossible value is a ``ConfigError`` naming the key, the value and
what is allowed, raised here, before any data is loaded or any client trains.

``model_args`` holds ``model`` plus the model's own options (e.g. ``d_model`` for the
transformer), checked by the model when it is built, also before training.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..params import doc, parse_fields
from ..security import Attack, Defense, Federation
from ..security.config import ComponentSpec, parse_component

FEDERATED_OPTIMIZERS = ("FedAvg", "FedOpt", "FedProx", "FedNova")
SERVER_OPTIMIZERS = ("adam", "yogi", "adagrad", "sgd")
CLIENT_OPTIMIZERS = ("sgd", "adam")
PARTITION_METHODS = ("iid", "hetero", "natural")
DEVICES = ("cpu", "cuda", "auto")
CLIENT_BATCHING = ("auto", "on", "off")


class ConfigError(ValueError):
    """A config that cannot run: the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class CommonArgs:
    random_seed: int = doc(0, "seed of everything random: model init, partition, sampling, "
                              "local shuffling, attacks")


@dataclass(frozen=True)
class DataArgs:
    dataset: str = doc("digits", "digits (embedded MNIST subset), shakespeare_plays (embedded "
                                 "text), mnist, fashion_mnist, cifar10, femnist, shakespeare, "
                                 "text")
    data_cache_dir: str | None = doc(None, "folder (or .txt file) of a dataset that is not "
                                           "embedded")
    partition_method: str = doc("hetero", "iid | hetero (Dirichlet over labels) | natural "
                                          "(LEAF users, speaking roles)",
                                choices=PARTITION_METHODS)
    partition_alpha: float = doc(0.5, "Dirichlet concentration of hetero; smaller is more "
                                      "skewed", gt=0)
    sequence_length: int = doc(80, "characters per text sample", ge=1)
    train_size: int | None = doc(None, "use a seeded random subset of this many training "
                                       "samples (null: all)")
    test_size: int | None = doc(None, "use a seeded random subset of this many test samples "
                                      "(null: all)")


@dataclass(frozen=True)
class ModelArgs:
    model: str = doc("lr", "lr, cnn, lenet5, resnet20, resnet56, bilstm, transformer")
    options: Mapping[str, Any] = doc(None, "the model's own options", factory=dict)


@dataclass(frozen=True)
class TrainArgs:
    federated_optimizer: str = doc("FedAvg", "FedAvg | FedOpt | FedProx | FedNova",
                                   choices=FEDERATED_OPTIMIZERS)
    client_num_in_total: int = doc(10, "clients in the federation", ge=1)
    client_num_per_round: int = doc(10, "clients sampled each round (without replacement)",
                                    ge=1)
    comm_round: int = doc(10, "communication rounds", ge=1)
    epochs: int = doc(1, "local epochs per round", ge=1)
    batch_size: int = doc(32, "local mini-batch size", ge=1)
    client_optimizer: str = doc("sgd", "sgd | adam", choices=CLIENT_OPTIMIZERS)
    learning_rate: float = doc(0.1, "clients' learning rate", gt=0)
    momentum: float = doc(0.0, "clients' SGD momentum", ge=0, lt=1)
    weight_decay: float = doc(0.0, "clients' L2 weight decay", ge=0)
    fedprox_mu: float = doc(0.01, "FedProx: weight mu of the proximal term "
                                  "mu/2 ||w - w_global||^2", ge=0)
    server_optimizer: str = doc("adam", "FedOpt: adam | yogi | adagrad | sgd",
                                choices=SERVER_OPTIMIZERS)
    server_lr: float = doc(1.0, "server learning rate on the averaged update (FedAvg: 1 "
                                "takes the average as it is)", gt=0)
    server_momentum: float = doc(0.0, "FedOpt sgd: server momentum (FedAvgM)", ge=0, lt=1)
    server_beta1: float = doc(0.9, "FedOpt adam/yogi: first-moment decay", ge=0, lt=1)
    server_beta2: float = doc(0.99, "FedOpt adam/yogi: second-moment decay", ge=0, lt=1)
    server_tau: float = doc(1e-3, "FedOpt: adaptivity tau (Reddi et al.)", gt=0)
    client_batching: str = doc("auto", "auto: train a round's clients together where that "
                                       "was measured faster (logistic regression) | on: "
                                       "wherever the model allows (no buffers, active dropout "
                                       "or recurrent layers) | off: one client after another "
                                       "(YAML's unquoted on / off, read as true / false, mean "
                                       "the same)", choices=CLIENT_BATCHING)


@dataclass(frozen=True)
class ValidationArgs:
    frequency_of_the_test: int = doc(1, "evaluate the global model every this many rounds "
                                        "(and after the last)", ge=1)


@dataclass(frozen=True)
class DeviceArgs:
    device: str = doc("cpu", "cpu | cuda | auto (cuda when usable)", choices=DEVICES)


SECTIONS: dict[str, type] = {"common_args": CommonArgs, "data_args": DataArgs,
                             "model_args": ModelArgs, "train_args": TrainArgs,
                             "validation_args": ValidationArgs, "device_args": DeviceArgs}


@dataclass(frozen=True)
class ExperimentConfig:
    common: CommonArgs = field(default_factory=CommonArgs)
    data: DataArgs = field(default_factory=DataArgs)
    model: ModelArgs = field(default_factory=ModelArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    validation: ValidationArgs = field(default_factory=ValidationArgs)
    device: DeviceArgs = field(default_factory=DeviceArgs)
    attack: ComponentSpec | None = None
    defense: ComponentSpec | None = None

    @property
    def federation(self) -> Federation:
        return Federation(self.train.client_num_in_total, self.train.client_num_per_round)

    def to_dict(self) -> dict[str, Any]:
        """The config with every default spelled out, as YAML sections (a run's config.yaml)."""
        out: dict[str, Any] = {}
        for section, value in zip(SECTIONS, (self.common, self.data, self.model, self.train,
                                             self.validation, self.device)):
            values = dataclasses.asdict(value)
            if section == "model_args":
                values = {"model": values["model"], **values["options"]}
            out[section] = values
        out["attack_args"] = (self.attack.as_args("attack") if self.attack
                              else {"enable_attack": False})
        out["defense_args"] = (self.defense.as_args("defense") if self.defense
                               else {"enable_defense": False})
        return out


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML file, apply ``section.key=value`` overrides (value parsed as YAML), parse."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not raw:
        raise ConfigError(f"config file {str(path)!r} is empty; give at least one section "
                          f"(e.g. train_args), or run a shipped config such as 'default'")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections; got "
                          f"{type(raw).__name__}")
    return parse_config(apply_overrides(raw, overrides))


def apply_overrides(raw: Mapping, overrides: list[str] | tuple[str, ...]) -> dict:
    """A copy of ``raw`` with each ``section.key=value`` set (``value`` read as YAML)."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for item in overrides:
        target, sep, text = item.partition("=")
        section, dot, key = target.partition(".")
        if not sep or not dot or not section or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. "
                              f"train_args.comm_round=5")
        current = out.setdefault(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"override {item!r}: {section} is not a mapping in the config")
        try:
            current[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"override {item!r}: the value {text!r} is not valid YAML "
                              f"({reason}); quote it to pass a string") from None
    return out


def parse_config(raw: Mapping) -> ExperimentConfig:
    """The typed config of a mapping of YAML sections; raises ConfigError."""
    valid = (*SECTIONS, "attack_args", "defense_args")
    unknown = [k for k in raw if k not in valid]
    if unknown:
        raise ConfigError(f"unknown config section {unknown[0]!r}; valid: {', '.join(valid)}")
    sections = {}
    for name, cls in SECTIONS.items():
        body = raw.get(name) or {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"{name} must be a mapping of keys; got {body!r}")
        sections[name] = _section(name, cls, body)
    train: TrainArgs = sections["train_args"]
    if train.federated_optimizer == "FedNova" and train.client_optimizer != "sgd":
        raise ConfigError(f"train_args.federated_optimizer=FedNova normalises SGD steps; "
                          f"client_optimizer={train.client_optimizer!r} must be 'sgd'")
    try:
        federation = Federation(train.client_num_in_total, train.client_num_per_round)
        attack = parse_component(Attack, raw.get("attack_args"), federation)
        defense = parse_component(Defense, raw.get("defense_args"), federation)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return ExperimentConfig(sections["common_args"], sections["data_args"],
                            sections["model_args"], train, sections["validation_args"],
                            sections["device_args"], attack, defense)


def _section(name: str, cls: type, body: Mapping) -> Any:
    if cls is ModelArgs:
        body = dict(body)
        model = body.pop("model", ModelArgs().model)
        if not isinstance(model, str) or not model:
            raise ConfigError(f"model_args.model must be a model name; got {model!r}")
        return ModelArgs(model, body)
    batching = body.get("client_batching") if cls is TrainArgs else None
    if isinstance(batching, bool):  # YAML 1.1 reads unquoted on / off as true / false
        body = {**body, "client_batching": "on" if batching else "off"}
    try:
        return parse_fields(cls, body, name, lambda key, fields: (
            f"{name}: unknown key {key!r}; valid keys: {', '.join(fields)}"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
