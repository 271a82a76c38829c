"""What the defenses built on one fedsec drop-in rule share (mda, monna, caf, smea, dnc, fltrust,
flame, signguard, clipped_clustering): the aggregation is one call of the rule on the round's
models, and the clients it left out are reported.

- ``RuleDefense``: an on-aggregation defense whose ``aggregate(states, weights, global_model,
  ctx, pre)`` returns the rule's (value, info); ``defend_on_aggregation`` reports the clients
  ``info.used`` leaves out (``excluded_clients``, with the core's reason, e.g. non-finite).
  With ``accepts_pre``, a chain's pre-aggregators (``ctx.pre_aggregators``) reach the rule as
  ``pre=``; the weights are then None (mixed models have no sample counts), else the sample
  counts.
- ``ByzantineParams`` / ``check_majority``: the key ``byzantine_client_num`` (f) and the
  requirement n > 2f of the rules that keep a majority (MDA, MoNNA, CAF, SMEA);
  ``MajorityRuleDefense``: a ``RuleDefense`` with both, taking a chain's pre-aggregators
  (MDA, CAF, SMEA).

The rules that read norms or cosines of updates get the local models with
``center=global_model``: their updates are w_i - w_g, read where the models lie (no update is
materialised), and the result is w_g + the aggregated update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..base import ClientModel, Defense, Federation, RoundContext, Stage, StateDict
from ..metrics import report_aggregation
from ._common import check_byzantine, counts, doc, states


@dataclass
class ByzantineParams:
    byzantine_client_num: int = doc(1, "f, the Byzantine clients tolerated; "
                                       "client_num_per_round > 2f", ge=0)


def check_majority(rule: str, params: ByzantineParams, federation: Federation) -> None:
    check_byzantine("byzantine_client_num", params.byzantine_client_num, federation,
                    f"{rule} needs client_num_per_round > 2f", lambda n, f: n > 2 * f)


class RuleDefense(Defense):
    stages = frozenset({Stage.ON_AGGREGATION})

    def aggregate(self, models: list[StateDict], weights: list[float] | None,
                  global_model: StateDict, ctx: RoundContext, pre: Any) -> tuple[StateDict, Any]:
        raise NotImplementedError

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        pre = (ctx.pre_aggregators or None) if self.accepts_pre else None
        value, info = self.aggregate(states(models), None if pre else counts(models),
                                     global_model, ctx, pre)
        report_aggregation(ctx, info, len(models), self.name)
        return value


class MajorityRuleDefense(RuleDefense):
    """A ``RuleDefense`` whose rule takes f = ``byzantine_client_num`` and needs n > 2f
    (checked at validation, the message naming ``rule_label``); it accepts a chain's
    pre-aggregators."""

    accepts_pre = True
    Params = ByzantineParams
    rule_label: ClassVar[str] = ""

    @classmethod
    def validate(cls, params: ByzantineParams, federation: Federation) -> None:
        check_majority(cls.rule_label, params, federation)


def round_seed(ctx: RoundContext) -> int:
    """A seed for a rule's draws this round, from the round's generator (seeded from the
    experiment's seed and the round): reproducible, new every round."""
    return int(ctx.rng.integers(2**31))
