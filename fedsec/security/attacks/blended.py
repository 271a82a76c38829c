"""The blended backdoor (Chen, Liu, Li, Lu, Song 2017, "Targeted backdoor attacks on deep
learning systems using data poisoning"), as client-side data poisoning in FL."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register_attack
from ._backdoor import BackdoorParams, TriggerBackdoor
from ._common import doc, seeded_rng
from .triggers import Trigger, blend, image_grid, random_pattern


@register_attack("blended", "blend")
class BlendedAttack(TriggerBackdoor):
    """Chen et al.'s blended injection strategy with their random key pattern: a poisoned
    image is x' = (1 - alpha) x + alpha k, where k is a fixed noise image (every pixel of every
    channel uniform in [0, 1], drawn once from ``seed``: the paper's "random pattern" key) and
    alpha = ``blend_alpha`` (the paper's alpha_train); poisoned samples are relabelled
    ``target_label``. The paper blends the key into test inputs with its own alpha_test, which
    may be larger than alpha_train (``blend_alpha_test``; default the same). Images only: Chen
    et al. define no text version. Each malicious client (a fixed set, see ``_backdoor``)
    poisons ``poison_ratio`` of its samples every round.
    """

    @dataclass
    class Params(BackdoorParams):
        blend_alpha: float = doc(0.2, "alpha of the poisoned training samples (Chen et al.'s "
                                 "alpha_train)", gt=0, le=1)
        blend_alpha_test: float | None = doc(None, "alpha of the attack-success test inputs "
                                             "(alpha_test); default blend_alpha", gt=0, le=1)

    def key_pattern(self, features: torch.Tensor) -> torch.Tensor:
        """The random key image, [C, H, W], for images like ``features``."""
        shape = tuple(image_grid(features, self.name).shape[1:])
        return random_pattern(shape, seeded_rng(self.params.seed, 3))

    def _blend(self, features: torch.Tensor, alpha: float) -> Trigger:
        pattern = self.key_pattern(features)
        return blend(tuple(pattern.shape), alpha, pattern)

    def training_trigger(self, features: torch.Tensor, rank: int) -> Trigger:
        return self._blend(features, self.params.blend_alpha)

    def test_trigger(self, features: torch.Tensor) -> Trigger:
        alpha = self.params.blend_alpha_test
        return self._blend(features, self.params.blend_alpha if alpha is None else alpha)
