"""Clipped clustering (Li et al. 2023, as Blades defines it), with the history of norms."""
from __future__ import annotations

import numpy as np

import fedsec

from ..registry import register_defense
from ..state import diff_norm
from ._rule_defense import RuleDefense


@register_defense("clipped_clustering", "clippedclustering")
class ClippedClusteringDefense(RuleDefense):
    """Clipped clustering (Li, Xia, Zhang, Tang, Wang 2023, "An experimental study of
    Byzantine-robust aggregation schemes in federated learning"; Blades'
    ``Clippedclustering``) on the updates w_i - w_g: each is clipped to tau, the median of
    every finite update norm seen since the first round (this round's included), then the
    updates are split in two by agglomerative clustering (average linkage) on their cosine
    distances, and the new global model is w_g plus the mean (weighted by sample counts) of
    the larger cluster (``fedsec.clipped_clustering(models, tau, center=w_g)``).

    The history is the paper's (and Blades') choice: a median over many rounds is one the
    attackers of one round can hardly move, where this round's median is theirs to shift when
    they are many. It holds one float per client per round, and is saved in the checkpoint.
    The clients of the smaller cluster are reported in excluded_clients. It takes no ``pre=``
    from a chain (its bound is a history of the clients' own norms, not of mixtures): a
    pre-aggregator before it mixes the models itself."""

    def __init__(self, params=None):
        super().__init__(params)
        self.norms: list[float] = []

    def state_dict(self) -> dict:
        return {"norms": list(self.norms)}

    def load_state_dict(self, state: dict) -> None:
        self.norms = [float(x) for x in state["norms"]]

    def aggregate(self, models, weights, global_model, ctx, pre):
        self.norms.extend(x for x in (diff_norm(m, global_model) for m in models)
                          if np.isfinite(x))
        tau = float(np.median(self.norms)) if self.norms else None
        return fedsec.clipped_clustering(models, weights=weights,
                                         tau=tau if tau else None, center=global_model,
                                         return_info=True)
