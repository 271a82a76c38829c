"""The distributed backdoor attack (Xie, Huang, Chen, Li, ICLR 2020, "DBA: distributed
backdoor attacks against federated learning")."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..base import Federation
from ..registry import register_attack
from ._backdoor import BackdoorParams, TriggerBackdoor
from ._common import doc
from .triggers import ImageTrigger, image_grid, patch


@register_attack("dba")
class DBAAttack(TriggerBackdoor):
    """DBA (Xie et al. 2020): one global trigger split into ``local_trigger_num`` local
    triggers; the malicious client of rank i (its position in the fixed malicious set, see
    ``_backdoor``) stamps only local trigger i mod local_trigger_num on its poisoned samples,
    and the backdoor is tested with the global trigger, the union of the local ones, which no
    single attacker trained on.

    The trigger's factors are the paper's: each local trigger is a 1 x ``trigger_size`` bar of
    ``trigger_value``, laid out two per row, ``trigger_gap`` pixels apart in both directions,
    from (``trigger_row``, ``trigger_col``) (the trigger location). Local trigger k sits at
    row trigger_row + (k // 2) (1 + gap) and column trigger_col + (k % 2) (size + gap): with
    the paper's MNIST factors (size 4, gap 2, location (0, 0)) rows 0 and 3, columns 0-3 and
    6-9. The default attackers are the paper's four, one per local trigger (multiple-shot:
    they poison in every round they take part in, without scaling their updates). Images
    only: DBA's other split (LOAN's feature groups) has no counterpart in fedsec's data.
    """

    @dataclass
    class Params(BackdoorParams):
        poisoned_client_num: int | None = doc(4, "number of malicious clients (DBA: 4, one "
                                              "per local trigger); overrides "
                                              "ratio_of_poisoned_client", ge=0)
        local_trigger_num: int = doc(4, "local triggers the global one is split into", ge=1)
        trigger_size: int = doc(4, "length of each local trigger's bar, in pixels", ge=1)
        trigger_gap: int = doc(2, "pixels between neighbouring local triggers", ge=0)
        trigger_row: int = doc(0, "row of the global trigger's top-left pixel", ge=0)
        trigger_col: int = doc(0, "column of the global trigger's top-left pixel", ge=0)
        trigger_value: float = doc(1.0, "value of the trigger's pixels (1: white)")

    @classmethod
    def validate(cls, params: "DBAAttack.Params", federation: Federation) -> None:
        super().validate(params, federation)
        count = cls.malicious_count(params, federation.client_num_in_total)
        if 0 < count < params.local_trigger_num:
            raise ValueError(f"local_trigger_num={params.local_trigger_num} local triggers need "
                             f"as many malicious clients, one per local trigger; got {count} "
                             f"(poisoned_client_num={params.poisoned_client_num}, "
                             f"ratio_of_poisoned_client={params.ratio_of_poisoned_client})")

    def local_triggers(self, features: torch.Tensor) -> list[ImageTrigger]:
        """The local triggers (k = 0 .. local_trigger_num - 1), for images like ``features``."""
        p = self.params
        shape = tuple(image_grid(features, self.name).shape[1:])
        where = (f"dba: local trigger {{k}} (trigger_size={p.trigger_size}, "
                 f"trigger_gap={p.trigger_gap}, trigger_row={p.trigger_row}, "
                 f"trigger_col={p.trigger_col})")
        return [patch(shape, p.trigger_row + (k // 2) * (1 + p.trigger_gap),
                      p.trigger_col + (k % 2) * (p.trigger_size + p.trigger_gap), 1,
                      p.trigger_size, p.trigger_value, where.format(k=k))
                for k in range(p.local_trigger_num)]

    def training_trigger(self, features: torch.Tensor, rank: int) -> ImageTrigger:
        parts = self.local_triggers(features)
        return parts[rank % len(parts)]

    def test_trigger(self, features: torch.Tensor) -> ImageTrigger:
        return functools.reduce(ImageTrigger.union, self.local_triggers(features))

