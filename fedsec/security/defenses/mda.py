"""Minimum-diameter averaging (El Mhamdi, Guerraoui, Rouault 2018)."""
from __future__ import annotations

import fedsec

from ..registry import register_defense
from ._rule_defense import MajorityRuleDefense


@register_defense("mda", "minimum_diameter_averaging")
class MDADefense(MajorityRuleDefense):
    """Minimum-diameter averaging (El Mhamdi, Guerraoui, Rouault, ICML 2018, "The hidden
    vulnerability of distributed learning in Byzantium"): the new global model is the mean,
    weighted by sample counts, of the n - f local models whose set has the smallest diameter
    (``fedsec.mda``: exhaustive while C(n, f) (n - f)^2 <= 10^7, greedy beyond). Requires
    n > 2f (f = ``byzantine_client_num``); the others are reported in excluded_clients.

    After a chain's pre-aggregators: the rule on the mixed models (``pre=``), unweighted
    (mixed models have no sample counts).
    """

    rule_label = "MDA"

    def aggregate(self, models, weights, global_model, ctx, pre):
        return fedsec.mda(models, self.params.byzantine_client_num, weights=weights,
                          return_info=True, pre=pre)
