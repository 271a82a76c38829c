"""CRFL: certifiably robust FL by clipping and smoothing the global model (FedML's ``crfl``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import Defense, RoundContext, Stage, StateDict
from ..registry import register_defense
from ..state import map_weights, state_norm
from ._common import add_gaussian_noise, doc


@register_defense("crfl")
class CRFLDefense(Defense):
    """CRFL (Xie, Chen, Chen, Li, ICML 2021, "CRFL: Certifiably robust federated learning
    against backdoor attacks").

    After aggregation, the global model is clipped in parameter norm and perturbed (parameter
    smoothing):

        w_g <- w_g / max(1, ||w_g||_2 / clip_threshold)
        w_g <- w_g + N(0, sigma^2 I)      (every round but the last, as the paper's Algorithm 1)

    The norm is over the weight parameters (BatchNorm running statistics and integer entries are
    untouched). sigma = 0 switches the noise off. The last round is ``comm_round - 1``, with
    ``comm_round`` from the parameters or else from the experiment (``setting.comm_round``); when
    neither is known every round is perturbed. Noise from ``ctx.rng``.
    Reports ``ctx.metrics["global_norm"]`` (before clipping).
    """

    stages = frozenset({Stage.AFTER_AGGREGATION})

    @dataclass
    class Params:
        clip_threshold: float = doc(15.0, "largest L2 norm of the global model", gt=0)
        sigma: float = doc(0.01, "standard deviation of the smoothing noise (0: none)", ge=0)
        comm_round: int | None = doc(None, "rounds of the experiment: the last one is not "
                                           "perturbed; null: the experiment's comm_round", ge=1)

    def defend_after_aggregation(self, global_model: StateDict, ctx: RoundContext) -> StateDict:
        norm = state_norm(global_model)
        ctx.metrics["global_norm"] = norm
        scale = 1.0 / max(1.0, norm / self.params.clip_threshold)
        clipped = map_weights(global_model, lambda k, v: v * scale) if scale < 1 else \
            dict(global_model)
        rounds = (self.params.comm_round if self.params.comm_round is not None
                  else self.setting.comm_round)
        last = rounds is not None and ctx.round_index >= rounds - 1
        if last:
            return clipped
        return add_gaussian_noise(clipped, self.params.sigma, ctx)
