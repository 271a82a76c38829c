"""FedMLSecurity's ``FedMLAttacker`` / ``FedMLDefender`` on fedsec's attacks and defenses.

Code written against FedML's security layer (``fedml.core.security``) moves with an import
change: the classes keep FedML's names, methods and arguments (FedML's argument object, lists
of ``(sample_count, OrderedDict)``) and hand the work to fedsec's attack and defense through
the stage functions of ``fedsec.security.pipeline`` (this facade is the only place with
FedML's method names). FedML's server aggregator makes, each round (``ServerAggregator``):

    FedMLAttacker.get_instance().init(args); FedMLDefender.get_instance().init(args)
    if attacker.is_model_attack():
        raw = attacker.attack_model(raw_client_grad_list=raw, extra_auxiliary_info=global_params)
    if defender.is_defense_enabled():
        raw = defender.defend_before_aggregation(raw_client_grad_list=raw,
                                                 extra_auxiliary_info=global_params)
        model = defender.defend_on_aggregation(raw_client_grad_list=raw,
                                               base_aggregation_func=FedMLAggOperator.agg,
                                               extra_auxiliary_info=global_params)
        model = defender.defend_after_aggregation(model)

Differences from FedML, on purpose:

- ``get_instance()`` returns a process-wide default instance, as FedML's code expects; every
  ``FedMLAttacker()`` / ``FedMLDefender()`` is independent of it and of each other (fedsec has
  no singletons), so two experiments can run in one process.
- ``init(args)`` checks the configuration as fedsec's YAML loading does (unknown names, wrong
  types, values impossible for ``client_num_per_round``) and raises its clear ValueError.
  ``args`` is FedML's flat argument object: ``args.enable_defense``, ``args.defense_type`` and
  the defense's parameters (``args.krum_param_m``, ``args.byzantine_client_num``...) side by
  side with every other key, so only the keys the chosen component declares are read. A fedsec
  YAML's nested ``args.defense_args`` / ``args.attack_args`` mapping is read instead when
  present, and then every key in it must belong to the component. ``args.client_num_in_total``
  and ``args.client_num_per_round`` are required; ``args.random_seed`` seeds the rounds.
- A round is the sequence of hook calls in stage order (attack; before-, on-,
  after-aggregation): a call to a stage no later than the previous call's opens the next
  round. Client ids are the positions in the list the round started with.
  ``get_malicious_client_idxs()`` names the positions the defense excluded in the last round;
  ``round_metrics`` is that round's ``RoundContext.metrics`` (excluded clients and why, Krum
  scores, malicious clients, ...).
"""
from __future__ import annotations

import dataclasses
import numbers
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..security import (Attack, ClientModel, Defense, Federation, RoundContext, Stage, StateDict,
                        build_attack, build_defense, fedavg, resolve)
from ..security.metrics import EXCLUDED_KEY
from ..security.pipeline import hooks, poison_model

FedMLModelList = list[tuple[float, OrderedDict[str, Any]]]
BaseAggregation = Callable[..., Mapping]  # FedML's FedMLAggOperator.agg(args, raw_grad_list)

# One round's hooks in the order FedML's aggregator calls them.
_POISON, _BEFORE, _ON, _AFTER = range(4)
# Separate random streams for the attacker's and the defender's rounds of one seed.
_ATTACKER_STREAM, _DEFENDER_STREAM = 0, 1


class _Rounds:
    """The round contexts of one attacker or defender (see the module's docstring)."""

    def __init__(self, seed: int, stream: int) -> None:
        self.seed = seed
        self.stream = stream
        self.index = -1
        self.current: RoundContext | None = None
        self._last_stage = -1

    def context(self, stage: int, num_models: int | None, where: str) -> RoundContext:
        """The context of the round a call of ``stage`` with ``num_models`` models (None: a
        call on the aggregate) belongs to."""
        if self.current is None or stage <= self._last_stage:
            self.index += 1
            self.current = RoundContext(
                round_index=self.index, client_ids=list(range(num_models or 0)),
                rng=np.random.default_rng([self.seed, self.index, self.stream]))
        elif num_models is not None and num_models != len(self.current.client_ids):
            raise ValueError(f"{where}: got {num_models} models, but this round kept "
                             f"{len(self.current.client_ids)} after its earlier hooks")
        self._last_stage = stage
        return self.current


class _FedMLComponent:
    """What FedMLAttacker and FedMLDefender share: the default instance, ``init``'s parsing of
    FedML's args, and the rounds."""

    kind: ClassVar[str]          # "attack" or "defense"
    base: ClassVar[type]         # fedsec.security.Attack or Defense
    build: ClassVar[Callable]    # fedsec.security.build_attack or build_defense
    stream: ClassVar[int]
    _default: ClassVar[_FedMLComponent | None] = None

    @classmethod
    def get_instance(cls):
        """The process-wide default instance (what FedML's own code calls); construct the class
        for an independent one."""
        if cls.__dict__.get("_default") is None:
            cls._default = cls()
        return cls._default

    def __init__(self) -> None:
        self.args: Any = None
        self._rounds: _Rounds | None = None

    def _parse(self, args: Any) -> Any:
        """The component ``args`` enables (or None), checked as fedsec's config loading does;
        starts the rounds afresh."""
        federation = _federation(args)
        seed = getattr(args, "random_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"args.random_seed must be an integer; got {seed!r}")
        # built for the federation: FedML's args name no model, so its setting holds only that
        component = self.build(_section(args, self.kind, self.base), federation)
        self.args = args
        self._rounds = _Rounds(seed, self.stream)
        return component

    def _context(self, stage: int, num_models: int | None, where: str) -> RoundContext:
        if self._rounds is None:
            raise RuntimeError(f"{type(self).__name__}.{where}: call init(args) first")
        return self._rounds.context(stage, num_models, where)

    @property
    def round_metrics(self) -> dict[str, Any]:
        """The last round's ``RoundContext.metrics`` ({} before the first round)."""
        current = self._rounds.current if self._rounds else None
        return current.metrics if current is not None else {}


class FedMLAttacker(_FedMLComponent):
    """FedML's ``FedMLAttacker`` on a fedsec attack."""

    kind, base, build, stream = "attack", Attack, staticmethod(build_attack), _ATTACKER_STREAM

    def __init__(self) -> None:
        super().__init__()
        self.attack: Attack | None = None

    def init(self, args: Any) -> None:
        """Set up the attack ``args`` enables (``enable_attack``, ``attack_type``, ...)."""
        self.attack = self._parse(args)

    def is_attack_enabled(self) -> bool:
        return self.attack is not None

    def get_attack_types(self) -> str | None:
        """The attack's fedsec name (FedML's ``attack_type`` spelling may be an alias)."""
        return self.attack.name if self.attack else None

    def is_model_poisoning_attack(self) -> bool:
        return hooks(self.attack, Stage.MODEL_POISONING)

    def is_data_poisoning_attack(self) -> bool:
        return hooks(self.attack, Stage.DATA_POISONING)

    def is_data_reconstruction_attack(self) -> bool:
        return hooks(self.attack, Stage.DATA_RECONSTRUCTION)

    def poison_model(self, raw_client_grad_list: FedMLModelList,
                     extra_auxiliary_info: Mapping) -> FedMLModelList:
        """The round's local models with the malicious clients' replaced by the attack;
        ``extra_auxiliary_info`` is the global model (FedML passes
        ``self.get_model_params()``)."""
        if not self.is_model_poisoning_attack():
            raise RuntimeError("FedMLAttacker.poison_model: no model-poisoning attack is "
                               "enabled (init(args) with enable_attack and a model-poisoning "
                               "attack_type)")
        models = _models(raw_client_grad_list, "poison_model")
        global_model = _global_model(extra_auxiliary_info, "poison_model")
        ctx = self._context(_POISON, len(models), "poison_model")
        # No trial aggregation: FedML's attacker does not know the defender.
        return _fedml_models(poison_model(self.attack, models, global_model, ctx))

    # FedML's spellings.
    is_model_attack = is_model_poisoning_attack
    attack_model = poison_model


class FedMLDefender(_FedMLComponent):
    """FedML's ``FedMLDefender`` on a fedsec defense (or defense chain)."""

    kind, base, build, stream = "defense", Defense, staticmethod(build_defense), _DEFENDER_STREAM

    def __init__(self) -> None:
        super().__init__()
        self.defense: Defense | None = None

    def init(self, args: Any) -> None:
        """Set up the defense ``args`` enables (``enable_defense``, ``defense_type``, ...)."""
        self.defense = self._parse(args)

    def is_defense_enabled(self) -> bool:
        return self.defense is not None

    def get_defense_types(self) -> str | None:
        """The defense's fedsec name (FedML's ``defense_type`` spelling may be an alias)."""
        return self.defense.name if self.defense else None

    def is_defense_before_aggregation(self) -> bool:
        return hooks(self.defense, Stage.BEFORE_AGGREGATION)

    def is_defense_on_aggregation(self) -> bool:
        return hooks(self.defense, Stage.ON_AGGREGATION)

    def is_defense_after_aggregation(self) -> bool:
        return hooks(self.defense, Stage.AFTER_AGGREGATION)

    def defend_before_aggregation(self, raw_client_grad_list: FedMLModelList,
                                  extra_auxiliary_info: Mapping | None = None) -> FedMLModelList:
        """The models the defense lets through (all of them when it has no before-aggregation
        stage); ``extra_auxiliary_info`` is the global model."""
        self._require_enabled("defend_before_aggregation")
        models = _models(raw_client_grad_list, "defend_before_aggregation")
        ctx = self._context(_BEFORE, len(models), "defend_before_aggregation")
        if not self.is_defense_before_aggregation():
            return list(raw_client_grad_list)
        global_model = _global_model(extra_auxiliary_info, "defend_before_aggregation")
        return _fedml_models(self.defense.defend_before_aggregation(models, global_model, ctx))

    def defend_on_aggregation(self, raw_client_grad_list: FedMLModelList,
                              base_aggregation_func: BaseAggregation | None = None,
                              extra_auxiliary_info: Mapping | None = None
                              ) -> OrderedDict[str, Any]:
        """The aggregate: the defense's own when it aggregates, else
        ``base_aggregation_func(args=args, raw_grad_list=raw_client_grad_list)`` as FedML calls
        it (FedML's ``FedMLAggOperator.agg``; fedsec's native weighted mean when None)."""
        self._require_enabled("defend_on_aggregation")
        models = _models(raw_client_grad_list, "defend_on_aggregation")
        ctx = self._context(_ON, len(models), "defend_on_aggregation")
        if self.is_defense_on_aggregation():
            global_model = _global_model(extra_auxiliary_info, "defend_on_aggregation")
            return OrderedDict(self.defense.defend_on_aggregation(models, global_model, ctx))
        if base_aggregation_func is None:
            return OrderedDict(fedavg(models, {}, ctx))
        return OrderedDict(base_aggregation_func(args=self.args,
                                                 raw_grad_list=list(raw_client_grad_list)))

    def defend_after_aggregation(self, global_model: Mapping) -> OrderedDict[str, Any]:
        """The new global model after the defense's after-aggregation stage (unchanged without
        one)."""
        self._require_enabled("defend_after_aggregation")
        aggregate = _global_model(global_model, "defend_after_aggregation")
        ctx = self._context(_AFTER, None, "defend_after_aggregation")
        if not self.is_defense_after_aggregation():
            return OrderedDict(aggregate)
        return OrderedDict(self.defense.defend_after_aggregation(aggregate, ctx))

    def get_malicious_client_idxs(self) -> list[int]:
        """Positions (in the round's first list) the defense excluded in the last round."""
        return list(self.round_metrics.get(EXCLUDED_KEY, []))

    def get_benign_client_idxs(self, client_idxs: Sequence[int]) -> list[int]:
        excluded = set(self.get_malicious_client_idxs())
        return [i for i in client_idxs if i not in excluded]

    def _require_enabled(self, where: str) -> None:
        if not self.is_defense_enabled():
            raise RuntimeError(f"FedMLDefender.{where}: no defense is enabled (call "
                               f"init(args) with enable_defense: true and a defense_type)")


# --- FedML's arguments and model lists ------------------------------------------------------------

def _federation(args: Any) -> Federation:
    """``client_num_in_total`` and ``client_num_per_round`` of FedML's ``train_args``."""
    values = {}
    for key in ("client_num_in_total", "client_num_per_round"):
        value = getattr(args, key, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"args.{key} must be a positive integer (FedML's train_args); got "
                             f"{value!r}: the attack and defense parameters are checked "
                             f"against it")
        values[key] = value
    return Federation(**values)


def _section(args: Any, kind: str, base: type) -> Mapping:
    """``args`` as fedsec's ``attack_args`` / ``defense_args`` section: the nested mapping
    when ``args`` has one, else the flat keys the chosen component (or every member of a
    chain, ``defense_type: [a, b]``) declares."""
    nested = getattr(args, f"{kind}_args", None)
    if nested is not None:
        if isinstance(nested, Mapping):
            return nested
        if hasattr(nested, "__dict__"):
            return vars(nested)
        raise ValueError(f"args.{kind}_args must be a mapping; got {nested!r}")
    enable_key, type_key = f"enable_{kind}", f"{kind}_type"
    section = {enable_key: getattr(args, enable_key, False)}
    if section[enable_key] is not True or not hasattr(args, type_key):
        return section  # disabled, or an error fedsec's parser words
    section[type_key] = getattr(args, type_key)
    names = section[type_key] if isinstance(section[type_key], list) else [section[type_key]]
    for name in names:  # a chain's members declare its keys between them
        for field in dataclasses.fields(resolve(base, name).Params):
            if hasattr(args, field.name):
                section[field.name] = getattr(args, field.name)
    return section


def _models(raw_client_grad_list: Any, where: str) -> list[ClientModel]:
    if not isinstance(raw_client_grad_list, Sequence) or len(raw_client_grad_list) == 0:
        raise TypeError(f"{where}: raw_client_grad_list must be a non-empty list of "
                        f"(sample_count, state_dict) tuples; got {raw_client_grad_list!r:.80}")
    models = []
    for i, entry in enumerate(raw_client_grad_list):
        if not (isinstance(entry, tuple) and len(entry) == 2
                and isinstance(entry[0], numbers.Real) and isinstance(entry[1], Mapping)):
            raise TypeError(f"{where}: raw_client_grad_list[{i}] must be a (sample_count, "
                            f"state_dict) tuple; got {type(entry).__name__} {entry!r:.80}")
        models.append((entry[0], dict(entry[1])))
    return models


def _global_model(value: Any, where: str) -> StateDict:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: the global model must be a state_dict (FedML's aggregator "
                        f"passes self.get_model_params() as extra_auxiliary_info); got "
                        f"{type(value).__name__}")
    return dict(value)


def _fedml_models(models: list[ClientModel]) -> FedMLModelList:
    return [(count, OrderedDict(state)) for count, state in models]


__all__ = ["FedMLAttacker", "FedMLDefender"]
