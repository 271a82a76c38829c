"""The attacker and the defender of one experiment, and one round's aggregation through them.

No singletons (FedML's are process-wide): an experiment owns its Attacker and Defender, so two
experiments can run side by side in one process.
"""
from __future__ import annotations

import time
from typing import Callable

from .base import Attack, ClientModel, Defense, RoundContext, Stage, StateDict


class Attacker:
    def __init__(self, attack: Attack | None = None):
        self.attack = attack

    def _has(self, stage: Stage) -> bool:
        return self.attack is not None and stage in self.attack.stages

    def is_attack_enabled(self) -> bool:
        return self.attack is not None

    def is_model_poisoning_attack(self) -> bool:
        return self._has(Stage.MODEL_POISONING)

    def is_data_poisoning_attack(self) -> bool:
        return self._has(Stage.DATA_POISONING)

    def is_data_reconstruction_attack(self) -> bool:
        return self._has(Stage.DATA_RECONSTRUCTION)

    def is_malicious(self, client_id: int, ctx: RoundContext) -> bool:
        return self.is_data_poisoning_attack() and self.attack.is_malicious(client_id, ctx)

    def poison_data(self, features, labels, client_id: int, ctx: RoundContext):
        return self.attack.poison_data(features, labels, client_id, ctx)

    def local_training(self, client_id: int, ctx: RoundContext) -> dict:
        return self.attack.local_training(client_id, ctx)

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        return self.attack.poison_model(models, global_model, ctx)

    def reconstruct_data(self, models: list[ClientModel], global_model: StateDict,
                         ctx: RoundContext) -> None:
        self.attack.reconstruct_data(models, global_model, ctx)


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
        models = attacker.poison_model(models, global_model, ctx)
    start = time.perf_counter()
    if defender.is_defense_before_aggregation():
        models = defender.defend_before_aggregation(models, global_model, ctx)
    if defender.is_defense_on_aggregation():
        new_global = defender.defend_on_aggregation(models, global_model, ctx)
    else:
        new_global = base_aggregation(models, global_model, ctx)
    if server_step is not None:
        new_global = server_step(global_model, new_global)
    if defender.is_defense_after_aggregation():
        new_global = defender.defend_after_aggregation(new_global, ctx)
    ctx.metrics["aggregation_time_s"] = time.perf_counter() - start
    return new_global
