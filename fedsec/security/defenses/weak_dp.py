"""Weak differential privacy (FedML's ``weak_dp``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict
from ..registry import register_defense
from ._common import add_gaussian_noise, doc
from .norm_diff_clipping import clip_models


@register_defense("weak_dp", "weak_differential_privacy")
class WeakDPDefense(Defense):
    """Weak differential privacy (Sun, Kairouz, Suresh, McMahan 2019, "Can you really backdoor
    federated learning?").

    Before aggregation, norm-difference clipping of each update:
        w_l <- w_g + (w_l - w_g) / max(1, ||w_l - w_g|| / norm_bound)
    after aggregation, Gaussian noise on the new global model:
        w_g <- w_g + N(0, stddev^2 I)
    over the weight parameters (BatchNorm running statistics and integer entries untouched).
    The noise is drawn from ``ctx.rng`` (seeded from the experiment's seed and the round).
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION, Stage.AFTER_AGGREGATION})

    @dataclass
    class Params:
        norm_bound: float = doc(5.0, "largest L2 norm of a client's update", gt=0)
        stddev: float = doc(0.025, "standard deviation of the noise on the global model", ge=0)

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        return clip_models(models, global_model, self.params.norm_bound, ctx)

    def defend_after_aggregation(self, global_model: StateDict, ctx: RoundContext) -> StateDict:
        return add_gaussian_noise(global_model, self.params.stddev, ctx)
