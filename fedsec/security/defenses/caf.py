"""The covariance-bound agnostic filter (Allouah, Guerraoui, Stephan 2025, as ByzFL defines it)."""
from __future__ import annotations

import fedsec

from ..metrics import report_weights
from ..registry import register_defense
from ._rule_defense import MajorityRuleDefense


@register_defense("caf", "covariance_bound_agnostic_filter")
class CAFDefense(MajorityRuleDefense):
    """Covariance-bound agnostic filter (Allouah, Guerraoui, Stephan, ICML 2025; ByzFL's CAF):
    the local models' weights start at 1 and are filtered along the top eigenvector of their
    weighted covariance until they sum to at most n - 2f; the new global model is the weighted
    mean with the smallest top eigenvalue seen (``fedsec.caf``, exact eigenpairs). Sample
    counts are not used, as in the paper. Requires n > 2f (f = ``byzantine_client_num``).
    Reports the final weights in client_weights (a weight of 0 also in excluded_clients).

    After a chain's pre-aggregators: the rule on the mixed models (``pre=``), unweighted
    (mixed models have no sample counts).
    """

    rule_label = "CAF"

    def aggregate(self, models, weights, global_model, ctx, pre):
        value, info = fedsec.caf(models, self.params.byzantine_client_num, return_info=True,
                                 pre=pre)
        report_weights(ctx, info.coefficients)
        return value, info
