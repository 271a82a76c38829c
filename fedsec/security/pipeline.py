"""One round's security hooks: the attack and the defense (chain) of an experiment, called in
the stages of the FedMLSecurity design (Han et al., Algorithm 2), the same for every engine.

The engines (the simulation, Flower's strategy and ClientApp, the FedML facade) own their
attack and defense, and call them only through these functions: the server's round through
``aggregate_round`` (or, for FedML's per-stage calls, its stage functions), a client's data
through ``is_malicious``, a client's upload through ``defend_client_update``. An attack's
hooks run only in the rounds of its schedule (``fedsec.security.schedule``); either component
may be None (no attack, no defense).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable

import torch

from .base import (Attack, ClientModel, Component, Defense, RoundContext, Setting, Stage,
                   StateDict)
from .detection import report_detection
from .schedule import AttackWindow


def hooks(component: Component | None, stage: Stage) -> bool:
    """Whether ``component`` (None: none) hooks ``stage``."""
    return component is not None and stage in component.stages


def attacks_in(attack: Attack, round_index: int) -> bool:
    """Whether the attack runs in round ``round_index`` (its schedule; always without one)."""
    window = attack.params
    return not isinstance(window, AttackWindow) or window.attacks_in(round_index)


def is_malicious(attack: Attack | None, client_id: int, ctx: RoundContext) -> bool:
    """Whether ``client_id`` trains on poisoned data this round (then its data goes through
    ``attack.poison_data`` and its training follows ``attack.local_training``)."""
    return (hooks(attack, Stage.DATA_POISONING) and attacks_in(attack, ctx.round_index)
            and attack.is_malicious(client_id, ctx))


def defend_client_update(defense: Defense | None, local: StateDict, global_model: StateDict,
                         features: torch.Tensor, client_id: int, ctx: RoundContext) -> StateDict:
    """A client's upload after the client-side defenses (``Stage.CLIENT_UPDATE``), before the
    server or a reconstruction attack sees it; the hook's context is the round's with
    ``client_ids == [client_id]``."""
    if not hooks(defense, Stage.CLIENT_UPDATE):
        return local
    client_ctx = dataclasses.replace(ctx, client_ids=[int(client_id)])
    return defense.defend_client_update(local, global_model, features, client_ctx)


# A chain's members run in this stage order (a client's upload first, then the server's).
DEFENSE_STAGES = (Stage.CLIENT_UPDATE, Stage.BEFORE_AGGREGATION, Stage.ON_AGGREGATION,
                  Stage.AFTER_AGGREGATION)


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

    def setup(self, setting: Setting) -> None:
        super().setup(setting)
        for member in self.members:
            member.setup(setting)

    def defend_client_update(self, local: StateDict, global_model: StateDict,
                             features: torch.Tensor, ctx: RoundContext) -> StateDict:
        for member in self.at(Stage.CLIENT_UPDATE):
            local = member.defend_client_update(local, global_model, features, ctx)
        return local

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


Aggregation = Callable[[list[ClientModel], StateDict, RoundContext], StateDict]
ServerStep = Callable[[StateDict, StateDict], StateDict]


def aggregate_round(attack: Attack | None, defense: Defense | None, models: list[ClientModel],
                    global_model: StateDict, ctx: RoundContext,
                    base_aggregation: Aggregation,
                    server_step: ServerStep | None = None) -> StateDict:
    """Server aggregation of one round with the attack and defense hooks (Algorithm 2).

    ``server_step(global_model, aggregate)``, when given, turns the aggregate (the robust or
    plain average of the local models) into the new global model, e.g. a FedOpt server
    optimizer on the pseudo-gradient ``aggregate - global_model`` (Reddi et al. 2021); the
    after-aggregation defenses see its result, the model the clients get next.
    ``ctx.metrics["aggregation_time_s"]``: the time of the defenses, the aggregation and the
    server step (the attacks excluded); ``ctx.metrics["detection"]`` with a defense."""
    reconstruct_data(attack, models, global_model, ctx)
    models = poison_model(attack, models, global_model, ctx,
                          trial_aggregation(defense, global_model, ctx, base_aggregation))
    clients = list(ctx.client_ids)  # before a filter cuts them
    start = time.perf_counter()
    new_global = _aggregate(defense, models, global_model, ctx, base_aggregation)
    if server_step is not None:
        new_global = server_step(global_model, new_global)
    new_global = defend_after_aggregation(defense, new_global, ctx)
    ctx.metrics["aggregation_time_s"] = time.perf_counter() - start
    if defense is not None:
        report_detection(ctx, clients)
    return new_global


def reconstruct_data(attack: Attack | None, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> None:
    """Stage 1: a reconstruction attack observes the uploads (in its rounds)."""
    if hooks(attack, Stage.DATA_RECONSTRUCTION) and attacks_in(attack, ctx.round_index):
        attack.reconstruct_data(models, global_model, ctx)


def poison_model(attack: Attack | None, models: list[ClientModel], global_model: StateDict,
                 ctx: RoundContext, trial: Callable[..., StateDict] | None = None
                 ) -> list[ClientModel]:
    """Stage 2: the models after a model-poisoning attack (in its rounds), which may try
    candidates against the defense through ``ctx.aggregate = trial`` (None: the engine does
    not know the defense)."""
    if not (hooks(attack, Stage.MODEL_POISONING) and attacks_in(attack, ctx.round_index)):
        return models
    ctx.aggregate = trial
    try:
        return attack.poison_model(models, global_model, ctx)
    finally:
        ctx.aggregate = None


def defend_before_aggregation(defense: Defense | None, models: list[ClientModel],
                              global_model: StateDict, ctx: RoundContext) -> list[ClientModel]:
    """Stage 3: the models the before-aggregation defenses let through (all without any)."""
    if not hooks(defense, Stage.BEFORE_AGGREGATION):
        return models
    return defense.defend_before_aggregation(models, global_model, ctx)


def defend_on_aggregation(defense: Defense | None, models: list[ClientModel],
                          global_model: StateDict, ctx: RoundContext,
                          base_aggregation: Aggregation) -> StateDict:
    """Stage 4: the on-aggregation defense's aggregate, else ``base_aggregation``'s."""
    if hooks(defense, Stage.ON_AGGREGATION):
        return defense.defend_on_aggregation(models, global_model, ctx)
    return base_aggregation(models, global_model, ctx)


def defend_after_aggregation(defense: Defense | None, global_model: StateDict,
                             ctx: RoundContext) -> StateDict:
    """Stage 5: the new global model after the after-aggregation defenses."""
    if not hooks(defense, Stage.AFTER_AGGREGATION):
        return global_model
    return defense.defend_after_aggregation(global_model, ctx)


def _aggregate(defense: Defense | None, models: list[ClientModel], global_model: StateDict,
               ctx: RoundContext, base_aggregation: Aggregation) -> StateDict:
    """Stages 3 and 4."""
    models = defend_before_aggregation(defense, models, global_model, ctx)
    return defend_on_aggregation(defense, models, global_model, ctx, base_aggregation)


def trial_aggregation(defense: Defense | None, global_model: StateDict, ctx: RoundContext,
                      base_aggregation: Aggregation) -> Callable[..., StateDict]:
    """``aggregate(models, client_ids)``: what the round's defenses would aggregate from a
    candidate list of local models (``RoundContext.aggregate``). Each call runs on a copy of
    the round (its own metrics, a copy of the rng) and restores the defense's state, so the
    round's real aggregation is what it would have been without the calls."""

    def aggregate(models: list[ClientModel], client_ids: list[int]) -> StateDict:
        trial = dataclasses.replace(ctx, client_ids=list(client_ids), metrics={},
                                    rng=copy.deepcopy(ctx.rng), aggregate=None)
        saved = copy.deepcopy(defense.state_dict()) if defense is not None else None
        try:
            return _aggregate(defense, models, global_model, trial, base_aggregation)
        finally:
            if saved is not None:
                defense.load_state_dict(saved)

    return aggregate
