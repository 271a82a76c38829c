"""SignGuard (Xu et al. 2022)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import Federation
from ..registry import register_defense
from ._common import doc
from ._rule_defense import RuleDefense, round_seed


@register_defense("signguard", "sign_guard")
class SignGuardDefense(RuleDefense):
    """SignGuard (Xu, Huang, Song, Lan, 2022, "SignGuard: Byzantine-robust federated learning
    through collaborative malicious gradient filtering") on the updates w_i - w_g: a norm
    filter (``signguard_lower`` M < ||u_i|| < ``signguard_upper`` M, M the median norm) and
    MeanShift clustering of sign statistics on a ``signguard_fraction`` of the coordinates,
    drawn from the round's seeded generator; the new global model is w_g plus the mean
    (weighted by sample counts) of the updates both keep, clipped to M
    (``fedsec.signguard(models, center=w_g)``). The others are reported in
    excluded_clients; when none is kept the global model stays.

    After a chain's pre-aggregators: the rule on the mixed models (``pre=``), unweighted
    (mixed models have no sample counts).
    """

    accepts_pre = True

    @dataclass
    class Params:
        signguard_lower: float = doc(0.1, "norm filter: lower bound, relative to the median",
                                     ge=0)
        signguard_upper: float = doc(3.0, "norm filter: upper bound, relative to the median",
                                     gt=0)
        signguard_fraction: float = doc(0.1, "fraction of coordinates the sign statistics "
                                             "are taken on", gt=0, le=1)

    @classmethod
    def validate(cls, params: "SignGuardDefense.Params", federation: Federation) -> None:
        if not params.signguard_lower < params.signguard_upper:
            raise ValueError(f"signguard_lower={params.signguard_lower:g} must be below "
                             f"signguard_upper={params.signguard_upper:g}")

    def aggregate(self, models, weights, global_model, ctx, pre):
        p = self.params
        return fedsec.signguard(models, weights=weights, lower=p.signguard_lower,
                                upper=p.signguard_upper, fraction=p.signguard_fraction,
                                seed=round_seed(ctx), center=global_model, return_info=True,
                                pre=pre)
