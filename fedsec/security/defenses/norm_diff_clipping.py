"""Norm-difference clipping (FedML's ``norm_diff_clipping``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import ClientModel, Defense, RoundContext, Stage, StateDict
from ..registry import register_defense
from ._common import clip_towards, client_id, doc


@register_defense("norm_diff_clipping", "norm_clipping")
class NormDiffClippingDefense(Defense):
    """Norm-difference clipping (Sun et al. 2019, "Can you really backdoor federated
    learning?").

    Before aggregation each local model is pulled towards the global model so that its update
    has norm at most ``norm_bound``:

        w_l <- w_g + (w_l - w_g) / max(1, ||w_l - w_g||_2 / norm_bound)

    The norm is over the weight parameters (floating entries except BatchNorm running
    statistics, as FedML's ``is_weight_param``); the other entries are kept. Reports
    ``ctx.metrics["clipped_clients"]`` (ids) and ``ctx.metrics["update_norms"]`` ({id: norm}).
    """

    stages = frozenset({Stage.BEFORE_AGGREGATION})

    @dataclass
    class Params:
        norm_bound: float = doc(5.0, "largest L2 norm of a client's update w_l - w_g", gt=0)

    def defend_before_aggregation(self, models: list[ClientModel], global_model: StateDict,
                                  ctx: RoundContext) -> list[ClientModel]:
        return clip_models(models, global_model, self.params.norm_bound, ctx)


def clip_models(models: list[ClientModel], global_model: StateDict, bound: float,
                ctx: RoundContext) -> list[ClientModel]:
    out, norms, clipped = [], {}, []
    for i, (count, local) in enumerate(models):
        new, norm = clip_towards(local, global_model, bound)
        norms[client_id(ctx, i)] = norm
        if new is not local:
            clipped.append(client_id(ctx, i))
        out.append((count, new))
    ctx.metrics["update_norms"] = norms
    ctx.metrics["clipped_clients"] = clipped
    return out
