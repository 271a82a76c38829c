"""CIFAR-style residual networks (He et al. 2016, "Deep residual learning for image
recognition", CVPR, Sec. 4.2), FedML's ``resnet20`` / ``resnet56``."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..params import PositiveInt
from ._checks import image_shape
from .registry import register_model

STAGE_CHANNELS = (16, 32, 64)


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(groups, channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a norm after each, ReLU after the first and after the sum.

    Shortcut option A of He et al.: the identity, and where the block halves the size and
    doubles the channels, the input subsampled by 2 and zero-padded with the new channels
    (no parameters, so the model has exactly the paper's parameter count).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str,
                 groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm1 = _norm(norm, out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.norm2 = _norm(norm, out_channels, groups)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride]
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth 6n + 2: a 3x3 convolution to 16 channels, three
    stages of n basic blocks (16, 32, 64 channels; the second and third start with stride 2),
    global average pooling and a linear layer. Subclasses set ``depth``.

    ``norm: batch`` (default, as in the paper) or ``group``: GroupNorm with ``num_groups``
    groups (default 2; it must divide 16), which unlike batch statistics does not drift
    between clients with non-IID data (Hsieh et al. 2020, "The non-IID data quagmire of
    decentralized machine learning", ICML). Convolutions are initialised as in He et al. 2015
    (Kaiming normal, fan-out mode), norms to the identity. Any channel count and image size
    (28x28 and 32x32 included) works: the pooling averages what the stages leave.
    """

    depth: ClassVar[int]

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *,
                 norm: Literal["batch", "group"] = "batch", num_groups: PositiveInt = 2):
        super().__init__()
        channels, _, _ = image_shape(self.name, input_shape)
        if norm == "group" and STAGE_CHANNELS[0] % num_groups:
            raise ValueError(f"{self.name}: num_groups={num_groups} must divide the channel "
                             f"counts {STAGE_CHANNELS}")
        blocks_per_stage = (self.depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(channels, STAGE_CHANNELS[0], 3, padding=1,
                                            bias=False),
                                  _norm(norm, STAGE_CHANNELS[0], num_groups), nn.ReLU())
        blocks = []
        in_channels = STAGE_CHANNELS[0]
        for stage, out_channels in enumerate(STAGE_CHANNELS):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride, norm, num_groups))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(STAGE_CHANNELS[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        return self.fc(out.mean(dim=(2, 3)))


@register_model("resnet20")
class ResNet20(CifarResNet):
    """ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, 16/32/64 channels, option A
    shortcuts.

    Parameters on 3x32x32 with 10 classes: 269,722 (the paper's 0.27M), with either norm.
    """

    depth = 20


@register_model("resnet56")
class ResNet56(CifarResNet):
    """ResNet-56 (He et al. 2016): 3 stages of 9 basic blocks, 16/32/64 channels, option A
    shortcuts.

    Parameters on 3x32x32 with 10 classes: 853,018 (the paper's 0.85M), with either norm.
    """

    depth = 56
