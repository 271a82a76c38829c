"""The attacker and the defender of one experiment, and one round's aggregation through them.

No singletons (FedML's are process-wide): an experiment owns its Attacker and Defender, so two
experiments can run side by side in one process. The Attacker runs the attack's hooks only in
the rounds of its schedule (``fedsec.security.schedule``), for every engine alike.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable

from .base import Attack, ClientModel, Defense, RoundContext, Stage, StateDict
from .detection import report_detection
from .schedule import AttackWindow


class Attacker:
    def __init__(self, attack: Attack | None = None):
        self.attack = attack

    def _has(self, stage: Stage) -> bool:
        return self.attack is not None and stage in self.attack.stages

    def attacks_in(self, ctx: RoundContext) -> bool:
        """Whether the attack runs in this round (its schedule; always without one)."""
        window = self.attack.params
        return not isinstance(window, AttackWindow) or window.attacks_in(ctx.round_index)

    def is_attack_enabled(self) -> bool:
        return self.attack is not None

    def is_model_poisoning_attack(self) -> bool:
        return self._has(Stage.MODEL_POISONING)

    def is_data_poisoning_attack(self) -> bool:
        return self._has(Stage.DATA_POISONING)

    def is_data_reconstruction_attack(self) -> bool:
        return self._has(Stage.DATA_RECONSTRUCTION)

    def is_malicious(self, client_id: int, ctx: RoundContext) -> bool:
        return (self.is_data_poisoning_attack() and self.attacks_in(ctx)
                and self.attack.is_malicious(client_id, ctx))

    def poison_data(self, features, labels, client_id: int, ctx: RoundContext):
        return self.attack.poison_data(features, labels, client_id, ctx)

    def local_training(self, client_id: int, ctx: RoundContext) -> dict:
        return self.attack.local_training(client_id, ctx)

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        if not self.attacks_in(ctx):
            return models
        return self.attack.poison_model(models, global_model, ctx)

    def reconstruct_data(self, models: list[ClientModel], global_model: StateDict,
                         ctx: RoundContext) -> None:
        if self.attacks_in(ctx):
            self.attack.reconstruct_data(models, global_model, ctx)


DEFENSE_STAGES = (Stage.BEFORE_AGGREGATION, Stage.ON_AGGREGATION, Stage.AFTER_AGGREGATION)


class DefenseChain(Defense):
    """Several defenses as one (``defense_type: [norm_diff_clipping, median]``): each stage
    runs its members' hooks in the chain's order, before-aggregation filters one after the
    other, then the one on-aggregation rule (the config allows at most one), then the
    after-aggregation defenses on the new global model. The members' states are saved under
    their names.

    Pre-aggregators (members with ``pre_aggregator(global_model, ctx)``: NNM, bucketing, ARC)
    that come last before the rule feed it through ``pre=`` when it ``accepts_pre``: their
    fedsec.pre objects, in order, in ``ctx.pre_aggregators``. The rule then mixes inside its
    own passes (one combination or selection pass for the chain). Anywhere else (before a
    filter, which hands models on; before a rule without ``pre=``; before FedAvg) a
    pre-aggregator mixes the models itself, as it does alone."""

    name = "chain"

    def __init__(self, members: list[Defense]):
        super().__init__()
        self.members = list(members)
        self.name = "+".join(m.name for m in self.members)
        self.stages = frozenset().union(*(m.stages for m in self.members))
        self.params = {m.name: m.params for m in self.members}
        self.accepts_pre = any(m.accepts_pre for m in self.at(Stage.ON_AGGREGATION))

    def at(self, stage: Stage) -> list[Defense]:
        return [m for m in self.members if stage in m.stages]

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        waiting: list[Defense] = []  # pre-aggregators not applied yet
        for member in self.at(Stage.BEFORE_AGGREGATION):
            if _is_pre_aggregator(member):
                waiting.append(member)
                continue
            models = _mix(waiting, models, global_model, ctx)
            waiting = []
            models = member.defend_before_aggregation(models, global_model, ctx)
        if not self.accepts_pre:
            return _mix(waiting, models, global_model, ctx)
        ctx.pre_aggregators = [m.pre_aggregator(global_model, ctx) for m in waiting]
        return models

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        (rule,) = self.at(Stage.ON_AGGREGATION)
        return rule.defend_on_aggregation(models, global_model, ctx)

    def defend_after_aggregation(self, global_model: StateDict, ctx: RoundContext) -> StateDict:
        for member in self.at(Stage.AFTER_AGGREGATION):
            global_model = member.defend_after_aggregation(global_model, ctx)
        return global_model

    def state_dict(self) -> dict:
        return {m.name: m.state_dict() for m in self.members}

    def load_state_dict(self, state: dict) -> None:
        for member in self.members:
            member.load_state_dict(state[member.name])


def _is_pre_aggregator(defense: Defense) -> bool:
    return callable(getattr(defense, "pre_aggregator", None))


def _mix(pre_aggregators: list[Defense], models: list[ClientModel], global_model: StateDict,
         ctx: RoundContext) -> list[ClientModel]:
    """The models mixed by each pre-aggregator in turn, through its own hook."""
    for member in pre_aggregators:
        models = member.defend_before_aggregation(models, global_model, ctx)
    return models


class Defender:
    def __init__(self, defense: Defense | None = None):
        self.defense = defense

    def _has(self, stage: Stage) -> bool:
        return self.defense is not None and stage in self.defense.stages

    def is_defense_enabled(self) -> bool:
        return self.defense is not None

    def is_defense_before_aggregation(self) -> bool:
        return self._has(Stage.BEFORE_AGGREGATION)

    def is_defense_on_aggregation(self) -> bool:
        return self._has(Stage.ON_AGGREGATION)

    def is_defense_after_aggregation(self) -> bool:
        return self._has(Stage.AFTER_AGGREGATION)

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        return self.defense.defend_before_aggregation(models, global_model, ctx)

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        return self.defense.defend_on_aggregation(models, global_model, ctx)

    def defend_after_aggregation(self, global_model: StateDict, ctx: RoundContext) -> StateDict:
        return self.defense.defend_after_aggregation(global_model, ctx)


Aggregation = Callable[[list[ClientModel], StateDict, RoundContext], StateDict]
ServerStep = Callable[[StateDict, StateDict], StateDict]


def aggregate_round(attacker: Attacker, defender: Defender, models: list[ClientModel],
                    global_model: StateDict, ctx: RoundContext,
                    base_aggregation: Aggregation,
                    server_step: ServerStep | None = None) -> StateDict:
    """Server aggregation of one round with the attack and defense hooks (Algorithm 2).

    ``server_step(global_model, aggregate)``, when given, turns the aggregate (the robust or
    plain average of the local models) into the new global model, e.g. a FedOpt server
    optimizer on the pseudo-gradient ``aggregate - global_model`` (Reddi et al. 2021); the
    after-aggregation defenses see its result, the model the clients get next.
    ``ctx.metrics["aggregation_time_s"]``: the time of the defenses, the aggregation and the
    server step (the attacks excluded)."""
    if attacker.is_data_reconstruction_attack():
        attacker.reconstruct_data(models, global_model, ctx)
    if attacker.is_model_poisoning_attack():
        ctx.aggregate = trial_aggregation(defender, global_model, ctx, base_aggregation)
        models = attacker.poison_model(models, global_model, ctx)
        ctx.aggregate = None
    clients = list(ctx.client_ids)  # before a filter cuts them
    start = time.perf_counter()
    new_global = _aggregate(defender, models, global_model, ctx, base_aggregation)
    if server_step is not None:
        new_global = server_step(global_model, new_global)
    if defender.is_defense_after_aggregation():
        new_global = defender.defend_after_aggregation(new_global, ctx)
    ctx.metrics["aggregation_time_s"] = time.perf_counter() - start
    if defender.is_defense_enabled():
        report_detection(ctx, clients)
    return new_global


def _aggregate(defender: Defender, models: list[ClientModel], global_model: StateDict,
               ctx: RoundContext, base_aggregation: Aggregation) -> StateDict:
    """The before-aggregation defenses, then the on-aggregation one or ``base_aggregation``."""
    if defender.is_defense_before_aggregation():
        models = defender.defend_before_aggregation(models, global_model, ctx)
    if defender.is_defense_on_aggregation():
        return defender.defend_on_aggregation(models, global_model, ctx)
    return base_aggregation(models, global_model, ctx)


def trial_aggregation(defender: Defender, global_model: StateDict, ctx: RoundContext,
                      base_aggregation: Aggregation) -> Callable[..., StateDict]:
    """``aggregate(models, client_ids)``: what the round's defenses would aggregate from a
    candidate list of local models (``RoundContext.aggregate``). Each call runs on a copy of
    the round (its own metrics, a copy of the rng) and restores the defense's state, so the
    round's real aggregation is what it would have been without the calls."""

    def aggregate(models: list[ClientModel], client_ids: list[int]) -> StateDict:
        trial = dataclasses.replace(ctx, client_ids=list(client_ids), metrics={},
                                    rng=copy.deepcopy(ctx.rng), aggregate=None)
        saved = copy.deepcopy(defender.defense.state_dict()) if defender.defense else None
        try:
            return _aggregate(defender, models, global_model, trial, base_aggregation)
        finally:
            if saved is not None:
                defender.defense.load_state_dict(saved)

    return aggregate
