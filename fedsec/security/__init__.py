"""The security layer: attacks and defenses injected into FL aggregation (FedMLSecurity)."""
from .base import (Attack, ClientModel, Component, Defense, Federation, RoundContext, Stage,
                   StateDict, doc)
from .config import build_attack, build_defense
from .fedavg import fedavg
from .pipeline import Attacker, Defender, aggregate_round
from .registry import register_attack, register_defense, resolve

__all__ = ["Attack", "Defense", "Component", "Stage", "Federation", "RoundContext", "ClientModel",
           "StateDict", "doc", "Attacker", "Defender", "aggregate_round", "build_attack",
           "build_defense", "fedavg", "register_attack", "register_defense", "resolve"]
