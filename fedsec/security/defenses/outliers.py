"""Three-sigma outlier removal (FedML's ``three_sigma``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import fedsec

from ..base import keep_models, ClientModel, Defense, RoundContext, Stage, StateDict
from ..metrics import report_excluded
from ..registry import register_defense
from ..state import diff_norm
from ._common import client_id, doc, score_bounds, states


@register_defense("three_sigma", "3sigma", "three_sigma_defense")
class ThreeSigmaDefense(Defense):
    """Three-sigma rule on distances to the coordinate-wise median (Han et al., FedMLSecurity;
    the scoring of FedML's ThreeSigma defenses, with the median of Yin et al. 2018 as centre).

    Before aggregation, each client's score is s_i = ||w_i - median_coordinatewise(w)||_2
    (``fedsec.median``; weight parameters), and a client is dropped when

        s_i > mu + threshold_sigma * sigma.

    With ``robust`` (default) mu = median(s) and sigma = 1.4826 * median(|s - median(s)|) (MAD).
    FedML uses the sample mean and standard deviation (``robust: false``), but an outlier
    inflates them: among n clients a single point's z-score is at most (n - 1) / sqrt(n), below
    3 for n <= 10, so the plain rule can never drop one attacker out of 10; we follow the robust
    statistics. When sigma is 0 (identical scores), only scores above mu are dropped.
    Reports ``ctx.metrics["three_sigma_scores"]`` ({id: score}),
    ``ctx.metrics["three_sigma_bound"]`` and the dropped ids in
    ``ctx.metrics["excluded_clients"]``.
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION})

    @dataclass
    class Params:
        threshold_sigma: float = doc(3.0, "how many sigmas above mu a score may be", gt=0)
        robust: bool = doc(True, "median/MAD (true) or mean/sample std as FedML (false)")

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        if len(models) < 3:
            return models
        med, info = fedsec.median(states(models), return_info=True)
        used = list(info.used)
        for i, reason in info.excluded.items():
            report_excluded(ctx, [i], reason)
        scores = np.array([diff_norm(models[i][1], med) for i in used])
        _, bound = score_bounds(scores, self.params.threshold_sigma, self.params.robust)
        ctx.metrics["three_sigma_scores"] = {client_id(ctx, i): float(s)
                                             for i, s in zip(used, scores)}
        ctx.metrics["three_sigma_bound"] = bound
        keep = [i for i, s in zip(used, scores) if s <= bound]
        report_excluded(ctx, [i for i, s in zip(used, scores) if s > bound],
                        f"three_sigma: distance to the median above {bound:.6g}")
        return keep_models(models, keep, ctx)
