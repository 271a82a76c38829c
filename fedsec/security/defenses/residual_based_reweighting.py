"""Residual-based reweighting (FedML's ``residual_based_reweighting``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

import fedsec

from ..base import ClientModel, Defense, Federation, RoundContext, Stage, StateDict
from ..metrics import report_excluded, report_weights
from ..registry import register_defense
from ._common import add_update, doc, finite_rows, update_matrix, weight_keys

MAD_TO_SIGMA = 1.4826  # sigma of a normal distribution = 1.4826 * its median absolute deviation
COORDINATES_PER_BLOCK = 4096  # bounds the n x n x block slopes of the repeated median


@register_defense("residual_based_reweighting", "residual_reweighting", "irls")
class ResidualBasedReweightingDefense(Defense):
    """Residual-based reweighting (Fu, Xie, Li, Chen 2019, "Attack-resistant federated learning
    with residual-based reweighting"), the authors' ``IRLS_aggregation_split_restricted``.

    For each coordinate (weight parameters), with y_1..y_n the clients' values and x_i the
    rank of y_i (0..n-1):

    1. repeated-median regression of y on x (Siegel 1982): slope
       b = med_i med_(j != i) (y_(j) - y_(i)) / (j - i) over the sorted values, intercept
       a = med(y) - b (n - 1) / 2;
    2. residuals r_i = y_i - a - b x_i, standardised e_i = r_i / s with the robust scale
       s = 1.4826 (1 + 5 / (n - 1)) M + 1e-7, M the median of the |r| without the smallest;
    3. confidence w_i = psi(e_i / sqrt(1 - h_i)) / (e_i / sqrt(1 - h_i)) = min(1, K
       sqrt(1 - h_i) / |e_i|), psi Huber's with K = ``lambda_param`` sqrt(2 / n) and h_i the
       leverage of x_i in the design [1, x] (1 when e_i = 0);
    4. thresholding: a value with w_i < ``thresh`` is replaced by the line's a + b x_i;
    5. client weight c_i = sum over coordinates of w_i * std_j(w_j) (std over the clients,
       n - 1 in the denominator), then c <- (c / max c)^2; equal weights when every c_i is 0
       (every coordinate's confidences alike, where the authors' code divides 0 by 0).

    The new model is w_g + sum_i c_i u'_i / sum_i c_i with u' the thresholded updates (the
    regression is invariant to the shift by w_g). Non-weight entries come from the sample-count
    weighted mean. Needs client_num_per_round >= 3. A client whose update is not finite is
    excluded first. Reports ``ctx.metrics["client_weights"]`` ({id: c / sum c}),
    ``ctx.metrics["residual_replaced_fraction"]`` (share of values replaced by the line) and
    clients of weight 0 in ``ctx.metrics["excluded_clients"]``.
    """

    stages = frozenset({Stage.ON_AGGREGATION})

    @dataclass
    class Params:
        lambda_param: float = doc(2.0, "lambda: Huber's threshold is lambda * sqrt(2 / n)",
                                  gt=0)
        thresh: float = doc(0.1, "confidence below which a value is replaced by the "
                                 "regression line's", ge=0, le=1)

    @classmethod
    def validate(cls, params: "ResidualBasedReweightingDefense.Params",
                 federation: Federation) -> None:
        if federation.client_num_per_round < 3:
            raise ValueError(f"residual_based_reweighting needs client_num_per_round >= 3 "
                             f"(a regression line through the clients' values); got "
                             f"{federation.client_num_per_round}")

    def defend_on_aggregation(self, models: list[ClientModel], global_model: StateDict,
                              ctx: RoundContext) -> StateDict:
        keys = weight_keys(global_model)
        updates = update_matrix(models, global_model, keys)
        active = finite_rows(updates, ctx)
        y = updates[active]
        if len(active) < 3:
            raise ValueError(f"residual_based_reweighting needs 3 clients with finite updates; "
                             f"round {ctx.round_index} has {len(active)}")
        confidence_sum = torch.zeros(len(active), dtype=torch.float64)
        restricted = torch.empty_like(y)
        replaced = 0
        for start in range(0, y.shape[1], COORDINATES_PER_BLOCK):
            block = y[:, start:start + COORDINATES_PER_BLOCK].T  # [coordinates, clients]
            weights, line = residual_confidence(block, self.params.lambda_param)
            confidence_sum += (weights * weights.std(dim=1, keepdim=True)).sum(dim=0)
            keep = weights >= self.params.thresh
            restricted[:, start:start + block.shape[0]] = torch.where(keep, block, line).T
            replaced += int((~keep).sum())
        c = confidence_sum / confidence_sum.max() if confidence_sum.max() > 0 else \
            torch.ones_like(confidence_sum)
        c = c * c
        c = c / c.sum()
        aggregate = (c[:, None] * restricted).sum(dim=0)
        weights = np.zeros(len(models))
        weights[active] = c.numpy()
        report_weights(ctx, weights)
        report_excluded(ctx, [i for i in active if weights[i] == 0],
                        "residual_based_reweighting: weight 0")
        ctx.metrics["residual_replaced_fraction"] = replaced / max(1, y.numel())
        others = fedsec.mean([models[i][1] for i in active],
                             weights=[models[i][0] for i in active])
        return add_update(global_model, aggregate, keys, others)


def repeated_median_line(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``y`` ([m, n]), the repeated-median line of the sorted values against their
    positions 0..n-1: (slope, intercept) [m], intercept = median(y) - slope (n - 1) / 2."""
    n = y.shape[1]
    ys = y.sort(dim=1).values
    x = torch.arange(n, dtype=y.dtype)
    dx = x[None, :] - x[:, None]                                   # [i, j]: x_j - x_i
    slopes = (ys[:, None, :] - ys[:, :, None]) / torch.where(dx == 0, 1.0, dx)
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    inner = slopes[:, off_diagonal].reshape(len(y), n, n - 1)      # j != i
    slope = numpy_median(numpy_median(inner))
    intercept = numpy_median(ys) - slope * (n - 1) / 2
    return slope, intercept


def numpy_median(values: torch.Tensor) -> torch.Tensor:
    """Median over the last dimension, the mean of the two middle values for an even count."""
    s = values.sort(dim=-1).values
    n = s.shape[-1]
    return s[..., n // 2] if n % 2 else (s[..., n // 2 - 1] + s[..., n // 2]) / 2


def residual_confidence(y: torch.Tensor, lambda_param: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fu et al.'s confidence of each value of ``y`` ([m coordinates, n clients]) and the
    regression line's value at it: (weights [m, n], line [m, n])."""
    m, n = y.shape
    slope, intercept = repeated_median_line(y)
    rank = y.argsort(dim=1).argsort(dim=1).to(y.dtype)
    line = intercept[:, None] + slope[:, None] * rank
    residual = y - line
    spread = numpy_median(residual.abs().sort(dim=1).values[:, 1:])
    scale = MAD_TO_SIGMA * (1 + 5 / (n - 1)) * spread + 1e-7
    e = residual / scale[:, None]
    # leverage of rank x in the design [1, x] with x a permutation of 0..n-1
    centered = rank - (n - 1) / 2
    leverage = 1 / n + centered * centered / ((n * n - 1) * n / 12)
    root = torch.sqrt(1 - leverage)
    k = lambda_param * math.sqrt(2 / n)
    with torch.no_grad():
        weights = torch.where(e == 0, torch.ones_like(e),
                              torch.clamp(k * root / e.abs(), max=1.0))
    return weights, line
