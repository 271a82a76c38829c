"""Smallest maximum eigenvalue averaging (Allouah et al. 2023, as ByzFL defines it)."""
from __future__ import annotations

import fedsec

from ..registry import register_defense
from ._rule_defense import MajorityRuleDefense


@register_defense("smea", "smallest_maximum_eigenvalue_averaging")
class SMEADefense(MajorityRuleDefense):
    """Smallest maximum eigenvalue averaging (Allouah, Guerraoui, Gupta, Pinot, Stephan, ICML
    2023; ByzFL's SMEA): the new global model is the mean, weighted by sample counts, of the
    n - f local models whose covariance has the smallest largest eigenvalue (``fedsec.smea``:
    exact eigenvalues; exhaustive while C(n, f) (n - f)^2 <= 10^7, greedy beyond). Requires
    n > 2f (f = ``byzantine_client_num``); the others are reported in excluded_clients.

    After a chain's pre-aggregators: the rule on the mixed models (``pre=``), unweighted
    (mixed models have no sample counts).
    """

    rule_label = "SMEA"

    def aggregate(self, models, weights, global_model, ctx, pre):
        return fedsec.smea(models, self.params.byzantine_client_num, weights=weights,
                           return_info=True, pre=pre)
