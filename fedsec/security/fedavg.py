"""FedAvg's aggregation as the pipeline's ``base_aggregation``: what every engine (fedsec's
simulation, Flower, the FedML facade) averages with when no on-aggregation defense runs."""
from __future__ import annotations

import fedsec

from .base import ClientModel, RoundContext, StateDict
from .metrics import report_aggregation


def fedavg(models: list[ClientModel], global_model: StateDict, ctx: RoundContext) -> StateDict:
    """The sample-weighted mean of the local models (McMahan et al. 2017) on the native core.
    A client with NaN or Inf is left out and reported in ``ctx.metrics["excluded_clients"]``
    with the reason."""
    value, info = fedsec.mean([state for _, state in models],
                              weights=[count for count, _ in models], return_info=True)
    report_aggregation(ctx, info, len(models), "mean")
    return value
