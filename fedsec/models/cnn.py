"""The CNN of FedAvg's experiments (McMahan et al. 2017, "Communication-efficient learning of
deep networks from decentralized data", AISTATS), FedML's ``cnn``."""
from __future__ import annotations

import torch
from torch import nn

from ._checks import image_shape
from .registry import register_model


@register_model("cnn", "cnn_fedavg")
class FedAvgCNN(nn.Module):
    """FedAvg CNN (McMahan et al. 2017): two 5x5 convolutions (32, 64 channels), each followed
    by 2x2 max pooling, a 512-unit ReLU layer and a linear output layer.

    As in the paper: "two 5x5 convolution layers (the first with 32 channels, the second with
    64, each followed with 2x2 max pooling), a fully connected layer with 512 units and ReLu
    activation, and a final softmax output layer" (the softmax is left to the loss: the model
    returns logits [N, num_classes]). The convolutions are padded by 2 (size-preserving) and
    followed by ReLU, as in FedML's CNN_OriginalFedAvg, so a 28x28 image becomes 64 x 7 x 7
    and a 32x32 one 64 x 8 x 8 before the dense layer; any channel count and H, W >= 4 work.

    Parameters with 10 classes: 1,663,370 on 1x28x28 (conv 832 + 51,264, dense 1,606,144,
    output 5,130) and 2,156,490 on 3x32x32. No dropout, no normalisation: the model is twice
    differentiable (deep leakage from gradients differentiates its gradient).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels, height, width = image_shape(self.name, input_shape, min_side=4)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 64 * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(),
                                        nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
