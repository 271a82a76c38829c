"""The attack and defense interfaces of the FedMLSecurity design (Han et al., Algorithms 1-2).

Server aggregation of one round, given the local models W_l (a list of (sample_count,
state_dict)) and the last global model w_g:
1. data reconstruction attack (observes only): ``attack.reconstruct_data(W_l, w_g, ctx)``
2. model poisoning attack: ``W_l = attack.poison_model(W_l, w_g, ctx)``
3. before-aggregation defenses: ``W_l = defense.defend_before_aggregation(W_l, w_g, ctx)``
4. an on-aggregation defense replaces the aggregation: ``defense.defend_on_aggregation(...)``
5. after-aggregation defenses: ``w_g = defense.defend_after_aggregation(w_g, ctx)``
Client training: a malicious client's dataset goes through ``attack.poison_data`` first, and
each client's upload through ``defense.defend_client_update`` (a client-side defense such as
Soteria) before the server, or a reconstruction attack observing it, sees it.

What stays fixed for a whole experiment (the federation, the model, the learning rates, the
data's shape) reaches a component once, through ``Component.setup(Setting(...))``, which every
engine calls; ``RoundContext`` holds one round's state only.

A component declares the stages it hooks in ``stages`` and its parameters as a dataclass
``Params`` whose fields are the YAML keys, each with its default, doc and bounds
(``fedsec.params.doc``: checked when the config is parsed); ``validate`` keeps the checks that
need the federation's size, also before any training.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from ..params import doc  # noqa: F401  (components declare their Params with it)
from .schedule import AttackParams

StateDict = dict[str, torch.Tensor]
# A label that is not scored (torch's cross_entropy ignore_index), e.g. the positions of a
# language model's window other than the one a backdoor targets.
IGNORE_LABEL = -100
ClientModel = tuple[float, StateDict]  # (sample count, local model), as FedML's W_l entries


class Stage(enum.Enum):
    DATA_POISONING = "data_poisoning"
    MODEL_POISONING = "model_poisoning"
    DATA_RECONSTRUCTION = "data_reconstruction"
    BEFORE_AGGREGATION = "before_aggregation"
    ON_AGGREGATION = "on_aggregation"
    AFTER_AGGREGATION = "after_aggregation"
    CLIENT_UPDATE = "client_update"


@dataclass(frozen=True)
class Federation:
    """What a component may check its parameters against. Checked here, so the YAML config,
    the FedML facade and the Flower strategy refuse the same impossible federations."""

    client_num_in_total: int
    client_num_per_round: int

    def __post_init__(self) -> None:
        for key in ("client_num_in_total", "client_num_per_round"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"train_args.{key}={value!r} must be an integer >= 1")
        if self.client_num_per_round > self.client_num_in_total:
            raise ValueError(f"train_args.client_num_per_round={self.client_num_per_round} "
                             f"must be <= client_num_in_total={self.client_num_in_total}")


@dataclass(frozen=True)
class Setting:
    """The experiment's constants a component may need, given once by ``Component.setup``.
    A field is None when the engine does not know it (the FedML facade knows no model): a
    component that needs it says so when it runs (``Component.needs``) or falls back to a
    documented default.

    ``model_factory`` builds the model the state_dicts belong to; ``client_learning_rate`` is
    the clients' SGD step; ``comm_round`` the experiment's number of rounds;
    ``server_learning_rate`` the server's step on the averaged update (FedAvg: 1);
    ``input_shape`` the shape of one input sample and ``num_classes`` the data's class count;
    ``training_data`` the training split (features, labels), for a defense that holds clean data
    of its own drawn from it (FLTrust's root set).
    """

    federation: Federation | None = None
    model_factory: Callable[[], torch.nn.Module] | None = None
    client_learning_rate: float | None = None
    comm_round: int | None = None
    server_learning_rate: float | None = None
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    training_data: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class RoundContext:
    """One round as the components see it. ``client_ids[i]`` is the client whose model is
    W_l[i] (a before-aggregation defense that drops models drops their ids too: see
    ``keep_models``); ``metrics`` collects what components report (e.g. excluded clients) for the round's
    log; ``rng`` is seeded from the experiment's seed and the round, so choices are reproducible.

    ``client_batches`` maps a client to the first (features, labels) batch it trained on this
    round (ground truth, used only to score a reconstruction; None when nobody scores one).
    ``local_trainer(model, features, labels, client_id, overrides)`` trains ``model`` from the
    round's global model as that client trains (with ``overrides`` of its epochs / learning
    rate) and returns the trained state_dict, for attacks that train a malicious client
    themselves (Neurotoxin's masked gradients).
    ``aggregate(models, client_ids)`` returns what the server's defenses would aggregate from
    a candidate list of local models, for attacks that search against the defense in use
    (ALIE's and IPM's optimal variants); the pipeline sets it, and the round is unchanged by
    its calls.
    ``pre_aggregators`` are the fedsec.pre pre-aggregators (NNM, bucketing, ARC) a defense chain
    hands its on-aggregation rule, for a rule that declares ``accepts_pre`` to pass as ``pre=``
    (empty otherwise: the mixed models are then the rule's input itself).
    """

    round_index: int
    client_ids: list[int]
    rng: np.random.Generator
    metrics: dict[str, Any] = field(default_factory=dict)
    client_batches: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
    local_trainer: Callable[..., StateDict] | None = None
    aggregate: Callable[..., StateDict] | None = None
    pre_aggregators: list[Any] = field(default_factory=list)


def is_float(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def client_id(ctx: "RoundContext", position: int) -> int:
    """The id of the client whose model is at ``position`` of the round's list."""
    return int(ctx.client_ids[position]) if position < len(ctx.client_ids) else int(position)


def keep_models(models: list[ClientModel], positions: list[int],
                ctx: "RoundContext") -> list[ClientModel]:
    """The models at ``positions``; ``ctx.client_ids`` is cut to match, keeping the contract
    that ``client_ids[i]`` names the owner of ``models[i]``."""
    ctx.client_ids = [client_id(ctx, i) for i in positions]
    return [models[i] for i in positions]


@dataclass
class NoParams:
    """A component without parameters."""


class Component:
    """What attacks and defenses share: a registered name, the stages hooked, parameters."""

    name: ClassVar[str] = ""
    stages: ClassVar[frozenset[Stage]] = frozenset()
    Params: ClassVar[type] = NoParams
    # Until an engine calls setup: nothing known (a drop-in call of a hook).
    setting: Setting = Setting()

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def setup(self, setting: Setting) -> None:
        """Receive the experiment's constants, once, before the first round."""
        self.setting = setting

    def needs(self, key: str, what: str) -> Any:
        """``self.setting.<key>``, or a ValueError saying that this component needs it."""
        value = getattr(self.setting, key)
        if value is None:
            raise ValueError(f"{self.name or type(self).__name__} needs setting.{key} ({what}); "
                             f"this engine did not give it (Component.setup(Setting(...)))")
        return value

    @classmethod
    def validate(cls, params: Any, federation: Federation) -> None:
        """Raise ValueError naming the key, value and what is allowed; default: no check."""

    @classmethod
    def parameter_fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls.Params))

    def state_dict(self) -> dict[str, Any]:
        """What the component carries from one round to the next (tensors, numbers, lists and
        dicts of them). A run's checkpoint saves it, so a resumed run continues exactly where
        it stopped; stateless components keep the default, {}."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class Attack(Component):
    """Base class of attacks. Override the hooks of the stages in ``stages``. ``Params``
    deriving from ``AttackWindow`` / ``AttackParams`` (fedsec.security.schedule) carries the
    schedule keys, which the pipeline applies; ``knowledge`` says what the attacker sees."""

    Params: ClassVar[type] = AttackParams
    knowledge: ClassVar[str] = ""

    def is_malicious(self, client_id: int, ctx: RoundContext) -> bool:
        """Whether ``client_id`` is controlled by the attacker this round (data poisoning)."""
        return False

    def local_training(self, client_id: int, ctx: RoundContext) -> dict[str, Any]:
        """How a malicious client trains, where the attacker chooses (``epochs``,
        ``learning_rate``): overrides of the experiment's local training; {} keeps it."""
        return {}

    def poison_data(self, features: torch.Tensor, labels: torch.Tensor, client_id: int,
                    ctx: RoundContext) -> tuple[torch.Tensor, torch.Tensor]:
        return features, labels

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        return models

    def reconstruct_data(self, models: list[ClientModel], global_model: StateDict,
                         ctx: RoundContext) -> None:
        """Observes only; reports into ``ctx.metrics``."""


class Defense(Component):
    """Base class of defenses. Override the hooks of the stages in ``stages``. An
    on-aggregation rule that passes ``ctx.pre_aggregators`` to its fedsec rule as ``pre=``
    declares ``accepts_pre``; a pre-aggregation defense (NNM, bucketing, ARC) has a method
    ``pre_aggregator(global_model, ctx)`` returning its fedsec.pre object (see
    pipeline.DefenseChain)."""

    accepts_pre: ClassVar[bool] = False

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        return models

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        raise NotImplementedError(f"{self.name} does not aggregate")

    def defend_after_aggregation(self, global_model: StateDict, ctx: RoundContext) -> StateDict:
        return global_model

    def defend_client_update(self, local: StateDict, global_model: StateDict,
                             features: torch.Tensor, ctx: RoundContext) -> StateDict:
        """The upload of a client that trained on the batch ``features`` from w_g (the
        CLIENT_UPDATE stage); ``ctx.client_ids`` is that one client."""
        return local
