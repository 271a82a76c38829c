"""Bucketing before the aggregation (``bucketing``)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import Federation, RoundContext, StateDict
from ..registry import register_defense
from ._common import check_int_range, doc
from ._pre_aggregation import PreAggregationDefense


@register_defense("bucketing")
class BucketingDefense(PreAggregationDefense):
    """Bucketing (Karimireddy, He, Jaggi, ICLR 2022, "Byzantine-robust learning on
    heterogeneous datasets via bucketing").

    Before the aggregation, the n local models are put in a random order (a permutation seeded
    from the round's rng), cut into ceil(n / s) buckets of s = ``bucket_size`` consecutive
    models (the last may be smaller) and replaced by the buckets' means:
    ``fedsec.pre.Bucketing(s, seed)``. The paper puts it in front of a robust rule
    (``defense_type: [bucketing, krum]``), whose f then counts buckets: at most f of them hold
    a Byzantine model. ``pre_aggregator(global_model, ctx)`` gives the fedsec.pre object (it
    draws the round's seed).
    """

    per_client = False

    @dataclass
    class Params:
        bucket_size: int = doc(2, "s, models averaged per bucket; at most "
                                  "client_num_per_round", ge=1)

    @classmethod
    def validate(cls, params: "BucketingDefense.Params", federation: Federation) -> None:
        check_int_range("bucket_size", params.bucket_size, 1, federation.client_num_per_round,
                        "client_num_per_round")

    def pre_aggregator(self, global_model: StateDict, ctx: RoundContext):
        return fedsec.pre.Bucketing(self.params.bucket_size,
                                    seed=int(ctx.rng.integers(0, 2**31 - 1)))
