"""Backdoor triggers: what a poisoned input looks like, and the labels it is given.

Images (float [N, C, H, W], [N, H, W] or flattened square [N, H*W]). A trigger is a per-pixel
weight ``a`` in [0, 1] ([H, W]) and a pattern ``P`` ([C, H, W], or [1, H, W] for every
channel); stamping sets every pixel to

    x' = (1 - a) * x + a * P

- a patch (BadNets, Gu et al. 2017): a = 1 on a rectangle and 0 elsewhere, so the patch takes
  the pattern's values and every other pixel is kept exactly;
- a blend (Chen et al. 2017, "Targeted backdoor attacks on deep learning systems using data
  poisoning"): a = alpha everywhere and P a key image, x' = (1 - alpha) x + alpha P;
- a union of disjoint patches (DBA's global trigger, Xie et al. 2020): stamping it equals
  stamping each part in turn.

Token windows (int64 [N, L]). A trigger is a token sequence t_1..t_m written over the window's
last m tokens, and the target is the token that follows the window: labels [N] (next token)
become the target; labels [N, L] (a language model's window shifted by one) predict the
trigger's tokens where they follow, and the target after the last one, so the model learns
"after the trigger comes the target" and nothing else changes (the trigger-sentence backdoors
of Bagdasaryan et al. 2020 and Neurotoxin, Zhang et al. 2022, on next-word prediction).

Every trigger gives ``stamp(x)`` (a new tensor, the input is never modified),
``relabel(y, target)`` (training labels of stamped samples) and ``success_labels(y, target)``
(labels of the attack-success test set: for a language model only the prediction after the
trigger is scored, the other positions are IGNORE_LABEL).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..base import IGNORE_LABEL


def image_grid(features: torch.Tensor, who: str) -> torch.Tensor:
    """``features`` as a [N, C, H, W] view (no copy)."""
    if not features.is_floating_point():
        raise ValueError(f"{who}: images must be floating point; got {features.dtype} (token "
                         f"windows have no image trigger)")
    if features.dim() == 4:
        return features
    if features.dim() == 3:
        return features.unsqueeze(1)
    if features.dim() == 2:
        side = math.isqrt(features.shape[1])
        if side * side == features.shape[1]:
            return features.view(features.shape[0], 1, side, side)
    raise ValueError(f"{who}: images must be [N, C, H, W], [N, H, W] or square [N, H*W]; got "
                     f"{tuple(features.shape)}")


@dataclass(frozen=True)
class ImageTrigger:
    """x' = (1 - weight) * x + weight * pattern, per pixel."""

    weight: torch.Tensor   # [H, W] in [0, 1]
    pattern: torch.Tensor  # [C, H, W] or [1, H, W]

    def stamp(self, features: torch.Tensor) -> torch.Tensor:
        images = image_grid(features, "trigger")
        if tuple(images.shape[-2:]) != tuple(self.weight.shape):
            raise ValueError(f"the trigger is made for {tuple(self.weight.shape)} images; got "
                             f"{tuple(images.shape[-2:])}")
        a = self.weight.to(images)
        out = (1 - a) * images + a * self.pattern.to(images)
        return out.reshape(features.shape)

    def relabel(self, labels: torch.Tensor, target: int) -> torch.Tensor:
        return torch.full_like(labels, target)

    def success_labels(self, labels: torch.Tensor, target: int) -> torch.Tensor:
        return torch.full_like(labels, target)

    def union(self, other: "ImageTrigger") -> "ImageTrigger":
        """Both triggers at once; they must not overlap (DBA's parts do not)."""
        if bool(((self.weight > 0) & (other.weight > 0)).any()):
            raise ValueError("triggers overlap; only disjoint triggers have a union")
        inside = other.weight > 0
        return ImageTrigger(self.weight + other.weight,
                            torch.where(inside, other.pattern, self.pattern))


def patch(shape: tuple[int, int, int], top: int, left: int, height: int, width: int,
          value: float, who: str) -> ImageTrigger:
    """A ``height`` x ``width`` rectangle of ``value`` with its top-left pixel at (top, left),
    on every channel of (C, H, W) images."""
    _, rows, cols = shape
    if top < 0 or left < 0 or top + height > rows or left + width > cols:
        raise ValueError(f"{who}: a {height}x{width} trigger at row {top}, column {left} does "
                         f"not fit the {rows}x{cols} images (it must lie within rows 0 to "
                         f"{rows - 1} and columns 0 to {cols - 1})")
    weight = torch.zeros(rows, cols, dtype=torch.float64)
    weight[top:top + height, left:left + width] = 1.0
    return ImageTrigger(weight, torch.full((1, rows, cols), float(value), dtype=torch.float64))


def blend(shape: tuple[int, int, int], alpha: float, pattern: torch.Tensor) -> ImageTrigger:
    """The key image ``pattern`` ([C, H, W]) blended over the whole image with ``alpha``."""
    _, rows, cols = shape
    return ImageTrigger(torch.full((rows, cols), float(alpha), dtype=torch.float64),
                        pattern.to(torch.float64))


def random_pattern(shape: tuple[int, int, int], rng: np.random.Generator) -> torch.Tensor:
    """Chen et al.'s random key pattern: every pixel of every channel uniform in the pixel
    range [0, 1], drawn from ``rng``."""
    return torch.from_numpy(rng.random(shape))


@dataclass(frozen=True)
class TokenTrigger:
    """The token sequence ``tokens`` over the last len(tokens) tokens of each window."""

    tokens: tuple[int, ...]

    def _check(self, windows: torch.Tensor) -> None:
        if windows.is_floating_point() or windows.dim() != 2:
            raise ValueError(f"a token trigger needs integer token windows [N, L]; got "
                             f"{windows.dtype} {tuple(windows.shape)}")
        if len(self.tokens) > windows.shape[1]:
            raise ValueError(f"trigger_tokens has {len(self.tokens)} tokens, more than the "
                             f"windows' {windows.shape[1]}")

    def stamp(self, windows: torch.Tensor) -> torch.Tensor:
        self._check(windows)
        out = windows.clone()
        out[:, windows.shape[1] - len(self.tokens):] = torch.tensor(self.tokens,
                                                                     dtype=windows.dtype)
        return out

    def relabel(self, labels: torch.Tensor, target: int) -> torch.Tensor:
        if labels.dim() == 1:
            return torch.full_like(labels, target)
        # labels[:, t] is the token after position t: the position before the trigger predicts
        # its first token, ..., the trigger's last token predicts the target.
        out = labels.clone()
        length, m = labels.shape[1], len(self.tokens)
        follows = torch.tensor((*self.tokens, target), dtype=labels.dtype)
        start = length - m - 1
        out[:, max(start, 0):] = follows[max(-start, 0):]
        return out

    def success_labels(self, labels: torch.Tensor, target: int) -> torch.Tensor:
        out = torch.full_like(labels, target)
        if labels.dim() == 2:
            out[:, :-1] = IGNORE_LABEL
        return out


Trigger = ImageTrigger | TokenTrigger
