"""What the trigger backdoors share (badnets, blended, dba, edge_case): client-side data
poisoning by the malicious clients, and the attack-success test set.

The malicious clients are k = ``poisoned_client_num`` (or round(ratio_of_poisoned_client *
client_num_in_total)) of the federation's, by default a set fixed for the whole experiment
from ``seed`` (``malicious_selection: fixed``, as label flipping's and as DBA's and Wang et
al.'s attackers are), or drawn anew each round (``per_round``). In the rounds of the attack
window a malicious client poisons round(poison_ratio * N) of its N samples, chosen from (seed,
client, round): the subclass says how a chosen sample is changed (``poisoned_samples``: by
default its trigger stamped and its label set to ``target_label``).

The attack-success rate is the accuracy on the clean test samples whose true label is not the
target, with the test trigger and labelled with the target (``backdoor_test_set``), as the
papers measure it. The trigger is built from the data's shape when it is first needed, which
the simulation does when it sets up (before any training): a trigger that does not fit the
images, or a target that is not one of the classes, is an error then.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..base import Attack, Federation, RoundContext, Stage
from ..metrics import report_malicious
from ..schedule import AttackParams, selection_field
from ._common import client_total, doc, malicious_ids, seeded_rng
from .triggers import Trigger

POISONED_KEY = "backdoor_poisoned_samples"  # ctx.metrics: client id -> samples poisoned


@dataclass
class BackdoorParams(AttackParams):
    malicious_selection: str = selection_field("fixed")
    seed: int = doc(0, "seed of the malicious set, the poisoned samples and blended's key")
    target_label: int = doc(0, "label the backdoor gives triggered inputs", ge=0)
    poison_ratio: float = doc(0.3, "fraction of a malicious client's samples poisoned each "
                              "round (DBA: 20 of each batch of 64)", gt=0, le=1)
    ratio_of_poisoned_client: float = doc(0.1, "fraction of all clients that are "
                                          "malicious", ge=0, le=1)
    poisoned_client_num: int | None = doc(None, "number of malicious clients; overrides "
                                          "ratio_of_poisoned_client", ge=0)
    malicious_epochs: int | None = doc(None, "local epochs of the malicious clients (DBA "
                                       "trains its attackers longer); default the "
                                       "experiment's", ge=1)
    malicious_learning_rate: float | None = doc(None, "the malicious clients' local learning "
                                                "rate; default the experiment's", gt=0)


def malicious_training(params: Any) -> dict[str, Any]:
    """A malicious client's training overrides: ``malicious_epochs`` and
    ``malicious_learning_rate`` where set."""
    overrides = {"epochs": params.malicious_epochs,
                 "learning_rate": params.malicious_learning_rate}
    return {k: v for k, v in overrides.items() if v is not None}


def poison_rows(features: torch.Tensor, labels: torch.Tensor, fraction: float,
                rng: np.random.Generator,
                poison: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """k = round(fraction * N) of the N samples, drawn without replacement from ``rng``, replaced
    by ``poison(rows)`` (their new features and labels; None: nothing to poison with).
    Returns new tensors (the inputs are never modified) and k, or the inputs and 0 when nothing
    was poisoned."""
    n = features.shape[0]
    k = int(round(fraction * n))
    rows = torch.as_tensor(rng.choice(n, size=k, replace=False), dtype=torch.long,
                           device=features.device)
    poisoned = poison(rows) if k else None
    if poisoned is None:
        return features, labels, 0
    new_x, new_y = features.clone(), labels.clone()
    new_x[rows], new_y[rows] = poisoned
    return new_x, new_y, k


class TriggerBackdoor(Attack):
    """Base of the data-poisoning backdoors; a subclass defines ``test_trigger`` (and
    ``training_trigger`` when a client trains with another trigger than the one tested)."""

    stages = frozenset({Stage.DATA_POISONING})
    Params = BackdoorParams
    knowledge = "own data only"

    @classmethod
    def validate(cls, params: BackdoorParams, federation: Federation) -> None:
        num = params.poisoned_client_num
        if num is not None and num > federation.client_num_in_total:
            raise ValueError(f"poisoned_client_num={num} must be <= client_num_in_total = "
                             f"{federation.client_num_in_total}")

    @classmethod
    def malicious_count(cls, params: BackdoorParams, client_num_in_total: int) -> int:
        if params.poisoned_client_num is not None:
            return min(params.poisoned_client_num, client_num_in_total)
        return int(round(params.ratio_of_poisoned_client * client_num_in_total))

    # --- who attacks ---------------------------------------------------------------------------

    def attacker_rank(self, client_id: int, ctx: RoundContext) -> int | None:
        """The position of ``client_id`` among this round's malicious ids, ascending (None:
        benign)."""
        total = client_total(self.setting)
        bad = sorted(malicious_ids(self.params, ctx.round_index,
                                   self.malicious_count(self.params, total), total))
        return bad.index(int(client_id)) if int(client_id) in bad else None

    def is_malicious(self, client_id: int, ctx: RoundContext) -> bool:
        return self.attacker_rank(client_id, ctx) is not None

    def local_training(self, client_id: int, ctx: RoundContext) -> dict[str, Any]:
        return malicious_training(self.params)

    # --- triggers ------------------------------------------------------------------------------

    def test_trigger(self, features: torch.Tensor) -> Trigger:
        """The trigger of the attack-success test set, for inputs like ``features``."""
        raise NotImplementedError

    def training_trigger(self, features: torch.Tensor, rank: int) -> Trigger:
        """The trigger the malicious client of ``rank`` stamps (default: the test trigger)."""
        return self.test_trigger(features)

    def check_classes(self, num_classes: int | None, features: torch.Tensor) -> None:
        """Refuse a target outside the classes (of data like ``features``; for token windows
        a subclass also refuses trigger tokens outside the vocabulary)."""
        target = self.params.target_label
        if num_classes is not None and target >= num_classes:
            raise ValueError(f"{self.name}: target_label={target} is not one of the data's "
                             f"{num_classes} classes (0 to {num_classes - 1})")

    # --- data poisoning ------------------------------------------------------------------------

    def poison_data(self, features: torch.Tensor, labels: torch.Tensor, client_id: int,
                    ctx: RoundContext) -> tuple[torch.Tensor, torch.Tensor]:
        rank = self.attacker_rank(client_id, ctx)
        if rank is None:
            return features, labels
        report_malicious(ctx, [client_id])
        rng = seeded_rng(self.params.seed, 2, client_id, ctx.round_index)
        new_x, new_y, k = poison_rows(
            features, labels, self.params.poison_ratio, rng,
            lambda rows: self.poisoned_samples(features, labels, rows, rank, rng))
        ctx.metrics.setdefault(POISONED_KEY, {})[int(client_id)] = k
        return new_x, new_y

    def poisoned_samples(self, features: torch.Tensor, labels: torch.Tensor,
                         rows: torch.Tensor, rank: int, rng: np.random.Generator
                         ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """What the samples at ``rows`` become (None: the client has nothing to poison
        with)."""
        trigger = self.training_trigger(features, rank)
        return (trigger.stamp(features[rows]),
                trigger.relabel(labels[rows], self.params.target_label))

    def backdoor_test_set(self, features: torch.Tensor, labels: torch.Tensor,
                          num_classes: int | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """From clean test data: the samples whose true label is not the target, with the test
        trigger, labelled with the target; accuracy on it is the attack success rate (for a
        language model only the prediction after the trigger is scored)."""
        self.check_classes(num_classes, features)
        target = self.params.target_label
        true = labels if labels.dim() == 1 else labels[:, -1]
        keep = true != target
        trigger = self.test_trigger(features)
        return trigger.stamp(features[keep]), trigger.success_labels(labels[keep], target)
