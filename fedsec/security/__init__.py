"""The security layer: attacks and defenses injected into FL aggregation (FedMLSecurity)."""
from .base import (Attack, ClientModel, Component, Defense, Federation, RoundContext, Setting,
                   Stage, StateDict, doc)
from .config import build_attack, build_defense
from .fedavg import fedavg
from .pipeline import aggregate_round, defend_client_update, is_malicious
from .registry import register_attack, register_defense, resolve

__all__ = ["Attack", "Defense", "Component", "Stage", "Federation", "Setting", "RoundContext",
           "ClientModel", "StateDict", "doc", "aggregate_round", "is_malicious",
           "defend_client_update", "build_attack", "build_defense", "fedavg", "register_attack",
           "register_defense", "resolve"]
