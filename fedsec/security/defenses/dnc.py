"""Divide-and-Conquer (Shejwalkar & Houmansadr 2021)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import fedsec

from ..base import Federation
from ..registry import register_defense
from ._common import check_byzantine, doc
from ._rule_defense import RuleDefense, round_seed


@register_defense("dnc", "divide_and_conquer")
class DnCDefense(RuleDefense):
    """Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021, "Manipulating the Byzantine",
    Algorithm 2): ``dnc_iters`` times, on ``dnc_subsample`` random coordinates, the local
    models' projections on the top singular vector of their centered values score them and the
    floor(n - c f) lowest are kept (c = ``dnc_filter_frac``, f = ``byzantine_client_num``);
    the new global model is the mean, weighted by sample counts, of the models kept every
    time (``fedsec.dnc``). The coordinates are drawn anew each round from the round's seeded
    generator. Requires n - c f >= 1; the others are reported in excluded_clients.

    After a chain's pre-aggregators: the rule on the mixed models (``pre=``), unweighted
    (mixed models have no sample counts).
    """

    accepts_pre = True

    @dataclass
    class Params:
        byzantine_client_num: int = doc(1, "f, the Byzantine clients tolerated", ge=0)
        dnc_subsample: int = doc(10_000, "coordinates drawn per iteration (b)", ge=1)
        dnc_iters: int = doc(5, "iterations, each on its own coordinates", ge=1)
        dnc_filter_frac: float = doc(1.0, "c: floor(n - c f) models kept per iteration", ge=0)

    @classmethod
    def validate(cls, params: "DnCDefense.Params", federation: Federation) -> None:
        c = params.dnc_filter_frac
        check_byzantine("byzantine_client_num", params.byzantine_client_num, federation,
                        f"DnC keeps floor(client_num_per_round - c f) >= 1 models "
                        f"(dnc_filter_frac c={c:g})", lambda n, f: math.floor(n - c * f) >= 1)

    def aggregate(self, models, weights, global_model, ctx, pre):
        p = self.params
        return fedsec.dnc(models, p.byzantine_client_num, weights=weights,
                          subsample=p.dnc_subsample, iters=p.dnc_iters, c=p.dnc_filter_frac,
                          seed=round_seed(ctx), return_info=True, pre=pre)
