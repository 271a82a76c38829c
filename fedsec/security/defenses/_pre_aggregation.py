"""What the pre-aggregation defenses (nnm, bucketing, arc) share: a fedsec.pre object each
round, and, used alone, the round's models replaced by the mixed ones.

``pre_aggregator(global_model, ctx)`` is the round's pre-aggregator (fedsec.aggregation.pre): a
chain can pass it by ``pre=`` to its on-aggregation rule (one combination pass for the chain).
Used alone (or before a rule that takes no ``pre=``), ``defend_before_aggregation`` replaces
the n models by the n' mixed ones (``fedsec.pre.apply``; non-finite models are excluded first
and reported): a mixed model that replaces one client's (NNM, ARC) keeps that client's sample
count and id in ``ctx.client_ids``; a bucket's carries the mean count of its members and the
id of its first member.
"""
from __future__ import annotations

import numpy as np

import fedsec

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict
from ..metrics import report_excluded
from ._common import client_id, counts, states


class PreAggregationDefense(Defense):
    stages = frozenset({Stage.BEFORE_AGGREGATION})
    per_client = True  # mixed model p replaces the p-th client in play (NNM, ARC)

    def pre_aggregator(self, global_model: StateDict, ctx: RoundContext):
        raise NotImplementedError

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        mixed = fedsec.pre.apply(states(models), self.pre_aggregator(global_model, ctx),
                                 details=True)
        for position, reason in mixed.excluded.items():
            report_excluded(ctx, [position], reason)
        sizes = np.asarray(counts(models))
        if self.per_client:
            owners = [i for i in range(len(models)) if i not in mixed.excluded]
            sizes = sizes[owners]
        else:  # a bucket's rows are averages: the mean of its members' counts
            owners = [int(np.flatnonzero(row)[0]) for row in mixed.matrix]
            sizes = mixed.matrix @ sizes
        ctx.client_ids = [client_id(ctx, i) for i in owners]
        return [(float(size), state) for size, state in zip(sizes, mixed.updates)]
