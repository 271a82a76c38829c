"""FLAME (Nguyen et al. 2022)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..registry import register_defense
from ._common import doc
from ._rule_defense import RuleDefense, round_seed


@register_defense("flame")
class FLAMEDefense(RuleDefense):
    """FLAME (Nguyen et al., USENIX Security 2022, "FLAME: Taming backdoors in federated
    learning", Algorithm 1) on the updates w_i - w_g: HDBSCAN (min_cluster_size n/2 + 1) on
    their cosine distances admits the largest cluster; each admitted update is clipped to the
    median update norm S; the new global model is w_g plus their mean (weighted by sample
    counts) plus Gaussian noise of standard deviation ``flame_noise_lambda`` * S, drawn from
    the round's seeded generator (``fedsec.flame(models, center=w_g)``). The paper takes the
    cosines of the local models' weights; fedsec takes them of the updates, like every cosine
    rule here (docs/api.md), which the global model shared by all clients does not dominate.
    The clients outside the cluster are reported in excluded_clients.

    After a chain's pre-aggregators: the rule on the mixed models (``pre=``), unweighted
    (mixed models have no sample counts).
    """

    accepts_pre = True

    @dataclass
    class Params:
        flame_noise_lambda: float = doc(0.001, "noise level lambda: sigma = lambda * median "
                                               "update norm (the paper's 0.001 for image "
                                               "classification)", ge=0)

    def aggregate(self, models, weights, global_model, ctx, pre):
        return fedsec.flame(models, weights=weights, noise_lambda=self.params.flame_noise_lambda,
                            seed=round_seed(ctx), center=global_model, return_info=True,
                            pre=pre)
