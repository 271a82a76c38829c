"""LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition",
Proc. IEEE), in its usual modern form."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ._checks import image_shape
from .registry import register_model

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@register_model("lenet5")
class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998), modern variant: conv 6@5x5 (padded by 2), conv 16@5x5,
    dense 120, 84 and the output, with 2x2 max pooling.

    The modern variant departs from the paper in four places: max pooling instead of trainable
    subsampling, ReLU (``activation``, default) instead of the scaled tanh, a full C3 (every
    6 -> 16 connection, not the paper's sparse table) and a linear output instead of RBF units
    (logits [N, num_classes]). The first convolution is padded by 2, so a 28x28 MNIST digit
    plays the 32x32 input of the paper: 28 -> 28 -> 14 -> 10 -> 5, i.e. 16 x 5 x 5 before the
    dense layers. Any channel count and H, W >= 12 work.

    ``activation: sigmoid`` gives the network of deep leakage from gradients (Zhu et al. 2019
    replace ReLU by sigmoid, whose second derivative is non-zero, to ease the attack).
    Parameters on 1x28x28 with 10 classes: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *,
                 activation: Literal["relu", "tanh", "sigmoid"] = "relu"):
        super().__init__()
        channels, height, width = image_shape(self.name, input_shape, min_side=12)
        act = ACTIVATIONS[activation]
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=2), act(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5), act(), nn.MaxPool2d(2),
        )
        flat = 16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2)
        self.classifier = nn.Sequential(nn.Linear(flat, 120), act(), nn.Linear(120, 84), act(),
                                        nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
