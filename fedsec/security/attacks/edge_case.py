"""The edge-case backdoor (Wang, Sreenivasan, Rajput, Vishwakarma, Agarwal, Sohn, Lee,
Papailiopoulos, NeurIPS 2020, "Attack of the tails: yes, you really can backdoor federated
learning")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..base import Federation
from ..registry import register_attack
from ._backdoor import BackdoorParams, TriggerBackdoor
from ._common import doc
from .triggers import image_grid

INK = 0.5  # a pixel above half the image's brightest value is part of the stroke


@register_attack("edge_case", "edge_case_backdoor")
class EdgeCaseAttack(TriggerBackdoor):
    """Wang et al.'s black-box edge-case attack: the attacker trains on its data mixed with
    edge-case examples, inputs from the tail of the input distribution (rare in every client's
    data), labelled ``target_label``; the backdoor's success is the fraction of held-out edge
    cases classified as the target. No trigger is added to anything else: clean inputs of every
    class keep their labels, so the backdoor barely conflicts with the benign clients.

    Edge cases here: continental sevens. Wang et al. take the 7s of ARDIS (digits from Swedish
    historical records, a handwriting rare in MNIST's) as edge cases for EMNIST and label them
    1. fedsec ships no second digit set, so the stand-in is the same digit in a rare style: a
    7 (``edge_case_source_label``) with the crossbar of the continental style, drawn through
    the middle of its stroke (two rows of white, half the digit's width, centered on the stroke
    at the digit's mid-height). The attacker makes them from its own 7s: each round
    round(poison_ratio * N) of its N samples are replaced by crossbar versions of its 7s (drawn
    with replacement) labelled ``target_label`` (its clean 7s stay in its data as 7s); a client
    without 7s poisons nothing that round (``backdoor_poisoned_samples`` reports 0). The
    success set is the test set's 7s with the crossbar, labelled with the target. (Wang et
    al.'s CIFAR-10 edge cases, Southwest airplanes labelled truck, and their projected-gradient
    variants against norm clipping are not included; neither is a text version.)
    """

    @dataclass
    class Params(BackdoorParams):
        target_label: int = doc(1, "label the edge cases are given (Wang et al.: 1)", ge=0)
        edge_case_source_label: int = doc(7, "the digit whose continental (crossbar) form is "
                                          "the edge case (Wang et al.: ARDIS 7s)", ge=0)

    @classmethod
    def validate(cls, params: "EdgeCaseAttack.Params", federation: Federation) -> None:
        super().validate(params, federation)
        if params.edge_case_source_label == params.target_label:
            raise ValueError(f"edge_case_source_label={params.edge_case_source_label} must "
                             f"differ from target_label={params.target_label}: an edge case "
                             f"relabelled to its own class is no backdoor")

    def check_classes(self, num_classes: int | None, features: torch.Tensor) -> None:
        super().check_classes(num_classes, features)
        source = self.params.edge_case_source_label
        if num_classes is not None and source >= num_classes:
            raise ValueError(f"edge_case: edge_case_source_label={source} is not one of the "
                             f"data's {num_classes} classes (0 to {num_classes - 1})")

    def poisoned_samples(self, features: torch.Tensor, labels: torch.Tensor,
                         rows: torch.Tensor, rank: int, rng: np.random.Generator
                         ) -> tuple[torch.Tensor, torch.Tensor] | None:
        sources = torch.nonzero(labels == self.params.edge_case_source_label).reshape(-1)
        if len(sources) == 0:
            return None
        picked = sources[torch.as_tensor(rng.integers(len(sources), size=len(rows)),
                                         device=sources.device)]
        return (continental_crossbar(features[picked]),
                torch.full_like(labels[rows], self.params.target_label))

    def backdoor_test_set(self, features: torch.Tensor, labels: torch.Tensor,
                          num_classes: int | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """The test set's edge cases: its ``edge_case_source_label`` images with the
        crossbar, labelled with the target (their true label is the source, not the
        target)."""
        self.check_classes(num_classes, features)
        keep = labels == self.params.edge_case_source_label
        return (continental_crossbar(features[keep]),
                torch.full_like(labels[keep], self.params.target_label))


def continental_crossbar(features: torch.Tensor) -> torch.Tensor:
    """Each image with a crossbar through its stroke: two rows of the image's brightest value
    at the mid-height of its ink (the rows with a pixel above INK x the brightest), spanning
    half the ink's width, centered on the ink of the middle row (on the ink's center when that
    row has none). A new tensor; every channel gets the bar."""
    images = image_grid(features, "edge_case")
    if images.shape[0] == 0:
        return features.clone()
    n, _, height, width = images.shape
    brightness = images.amax(dim=1)  # [N, H, W]
    top_value = brightness.flatten(1).amax(1)
    ink = brightness > INK * top_value.view(n, 1, 1)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device, dtype=images.dtype)
    inked_rows, inked_cols = ink.any(2), ink.any(1)
    top = torch.where(inked_rows, rows, height).amin(1)
    bottom = torch.where(inked_rows, rows, -1).amax(1)
    middle = ((top + bottom) // 2).clamp(0, height - 1)
    left = torch.where(inked_cols, cols, float(width)).amin(1)
    right = torch.where(inked_cols, cols, -1.0).amax(1)
    on_row = ink[torch.arange(n), middle].to(images.dtype)  # [N, W]
    center = torch.where(on_row.sum(1) > 0,
                         (on_row * cols).sum(1) / on_row.sum(1).clamp(min=1),
                         (left + right) / 2)
    half = ((right - left + 1) / 4).clamp(min=1)
    across = (cols.view(1, -1) >= (center - half).view(-1, 1)) & \
             (cols.view(1, -1) <= (center + half).view(-1, 1))           # [N, W]
    down = (rows.view(1, -1) == middle.view(-1, 1)) | \
           (rows.view(1, -1) == (middle + 1).view(-1, 1))                 # [N, H]
    bar = (down.unsqueeze(2) & across.unsqueeze(1)).unsqueeze(1)          # [N, 1, H, W]
    out = torch.where(bar, top_value.view(n, 1, 1, 1), images)
    return out.reshape(features.shape)
