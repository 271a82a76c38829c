"""When an attack runs and which clients it controls: the keys every built-in attack shares.

An attack's ``Params`` derives from ``AttackWindow`` (the rounds it runs in) or, when it
controls clients, from ``AttackParams`` (the window plus how its malicious clients are chosen).
The pipeline's ``Attacker`` runs the attack's hooks only in the window's rounds, so every attack
and every engine (the simulation, Flower, the FedML facade) follows the same schedule; the
attacks draw their malicious clients through the helpers of ``attacks/_common.py``, which follow
``malicious_selection``. A user's own attack gets these keys by deriving its ``Params`` from
one of the two classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..params import doc

SELECTIONS = ("fixed", "per_round")


def selection_field(default: str) -> Any:
    """The ``malicious_selection`` field with an attack's own default."""
    return doc(default, "fixed: the same client ids every round, drawn once from seed among "
                        "all clients (those sampled in a round attack in it); per_round: drawn "
                        "anew each round", choices=SELECTIONS)


@dataclass
class AttackWindow:
    """The rounds an attack runs in: attack_start_round, then every attack_frequency-th round
    up to attack_end_round (round indices count from 0, as the records' ``round``)."""

    attack_start_round: int = doc(0, "first round with the attack (0-based, as the records' "
                                     "round)", ge=0)
    attack_end_round: int | None = doc(None, "last round with the attack; default the "
                                             "experiment's last", ge=0)
    attack_frequency: int = doc(1, "attack every k-th round from attack_start_round", ge=1)

    def attacks_in(self, round_index: int) -> bool:
        start, end = self.attack_start_round, self.attack_end_round
        return (start <= round_index and (end is None or round_index <= end)
                and (round_index - start) % self.attack_frequency == 0)

    def check_window(self) -> None:
        """Checked when the config is parsed: a window with no round is a mistake."""
        end = self.attack_end_round
        if end is not None and self.attack_start_round > end:
            raise ValueError(f"attack_start_round={self.attack_start_round} is after "
                             f"attack_end_round={end}: the attack would never run")


@dataclass
class AttackParams(AttackWindow):
    """The window plus the choice of the malicious clients."""

    malicious_selection: str = selection_field("per_round")
    seed: int = doc(0, "seed of the attack's own draws (the fixed malicious set)")
