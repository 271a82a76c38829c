"""Logistic regression: the convex baseline of FL papers (FedML's ``lr``)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .registry import register_model


@register_model("lr", "logistic_regression")
class LogisticRegression(nn.Module):
    """Logistic regression: one Linear layer on the flattened input.

    Takes float features of any shape (an image is flattened to C*H*W values) and returns
    logits [N, num_classes]; softmax cross-entropy makes it multinomial logistic regression.
    Parameters on a 1x28x28 input with 10 classes: 784 * 10 + 10 = 7,850.
    """

    # Its clients train together under train_args.client_batching: auto (2-3x faster rounds
    # with 70 clients: bench/results/fl_round.md).
    client_batching_pays = True

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.linear = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))
