"""BadNets (Gu, Dolan-Gavitt, Garg 2017, "BadNets: identifying vulnerabilities in the machine
learning model supply chain"), as client-side data poisoning in FL."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register_attack
from ._backdoor import BackdoorParams, TriggerBackdoor
from ._common import doc
from .triggers import Trigger, TokenTrigger, image_grid, patch


@register_attack("badnets")
class BadNetsAttack(TriggerBackdoor):
    """BadNets' pixel-pattern backdoor (Gu et al. 2017, the "pattern backdoor" of their MNIST
    attack, single target): a ``trigger_size`` x ``trigger_size`` square of ``trigger_value``
    stamped on every channel, its top-left pixel at (``trigger_row``, ``trigger_col``), by
    default in the bottom-right corner as in the paper; the stamped samples are relabelled
    ``target_label``. Gu et al. poison the training set the victim trains on; here each
    malicious client (a fixed set, see ``_backdoor``) poisons ``poison_ratio`` of its samples
    every round.

    Token windows (text): the trigger is the token sequence ``trigger_tokens`` over the
    window's last tokens and the target is the next token (labels [N]) or the prediction after
    the trigger (a language model's labels [N, L]). BadNets itself is defined on images only;
    this is the trigger-sentence backdoor FL papers use on next-word prediction (Bagdasaryan
    et al. 2020, Neurotoxin), so that ``neurotoxin`` can wrap badnets on text too.
    """

    @dataclass
    class Params(BackdoorParams):
        trigger_size: int = doc(3, "side of the square trigger, in pixels", ge=1)
        trigger_row: int | None = doc(None, "row of the trigger's top-left pixel; default "
                                      "the bottom rows", ge=0)
        trigger_col: int | None = doc(None, "column of the trigger's top-left pixel; "
                                      "default the rightmost columns", ge=0)
        trigger_value: float = doc(1.0, "value of the trigger's pixels (1: white)")
        trigger_tokens: list[int] = doc(None, "text: the trigger's token ids, written over "
                                        "the window's last tokens (0 is '\\n' in the "
                                        "character vocabularies, which the embedded plays "
                                        "never contain)", factory=lambda: [0, 0, 0], ge=0)

    def test_trigger(self, features: torch.Tensor) -> Trigger:
        p = self.params
        if not features.is_floating_point():
            if not p.trigger_tokens:
                raise ValueError("badnets: trigger_tokens=[] must hold at least one token")
            return TokenTrigger(tuple(p.trigger_tokens))
        shape = tuple(image_grid(features, self.name).shape[1:])
        size = p.trigger_size
        row = shape[1] - size if p.trigger_row is None else p.trigger_row
        col = shape[2] - size if p.trigger_col is None else p.trigger_col
        return patch(shape, row, col, size, size, p.trigger_value,
                     f"badnets: trigger_size={size} (trigger_row={p.trigger_row}, "
                     f"trigger_col={p.trigger_col})")

    def check_classes(self, num_classes: int | None, features: torch.Tensor) -> None:
        super().check_classes(num_classes, features)
        tokens = self.params.trigger_tokens
        text = not features.is_floating_point()
        if text and num_classes is not None and any(t >= num_classes for t in tokens):
            raise ValueError(f"badnets: trigger_tokens={tokens} must be token ids below the "
                             f"vocabulary's {num_classes}")
