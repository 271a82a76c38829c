"""Label flipping (Tolpegin et al. 2020, "Data poisoning attacks against federated learning
systems", ESORICS), FedML's ``label_flipping``."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..base import Attack, Federation, RoundContext, Stage
from ..metrics import report_malicious
from ..registry import register_attack
from ..schedule import AttackParams, selection_field
from ._common import doc, malicious_ids, seeded_rng


@register_attack("label_flipping", "label_flip")
class LabelFlippingAttack(Attack):
    """Malicious clients train on data whose labels ``original_class_list[k]`` are replaced by
    ``target_class_list[k]`` (Tolpegin et al. 2020 flip 3 -> 9 and 2 -> 1 ... here any pairs;
    the mapping is applied simultaneously, so 3 -> 9 and 9 -> 3 swap the two classes).

    The malicious set is k = ``poisoned_client_num`` (or round(ratio_of_poisoned_client *
    client_num_in_total)) client ids, by default fixed for the whole experiment: the first k
    of a permutation of ``range(client_num_in_total)`` drawn from ``seed``, so ``is_malicious``
    is stable across rounds (``malicious_selection: per_round`` draws them from seed and the
    round instead). (Without ``setting.federation`` the set is not known: then each client is
    malicious with probability ``ratio_of_poisoned_client``, decided once from ``seed`` and its
    id.) ``poisoned_fraction`` < 1 flips only round(poisoned_fraction * m) of the m samples
    whose label is listed, chosen from (seed, client id, round). Only labels change; features
    and the input tensors are never modified. Reports ``ctx.metrics["malicious_clients"]`` and
    adds the flipped counts to ``ctx.metrics["label_flipping_flipped"]`` (client id -> count).
    """

    stages = frozenset({Stage.DATA_POISONING})
    knowledge = "own data only"

    @dataclass
    class Params(AttackParams):
        malicious_selection: str = selection_field("fixed")
        original_class_list: list[int] = doc(None, "labels to flip (Tolpegin et al.: [3, 2])",
                                             factory=lambda: [3], ge=0)
        target_class_list: list[int] = doc(None, "what each label of original_class_list "
                                           "becomes (same length; Tolpegin et al.: [9, 1])",
                                           factory=lambda: [9], ge=0)
        ratio_of_poisoned_client: float = doc(0.1, "fraction of all clients that are "
                                              "malicious", ge=0, le=1)
        poisoned_client_num: int | None = doc(None, "number of malicious clients; overrides "
                                              "ratio_of_poisoned_client", ge=0)
        poisoned_fraction: float = doc(1.0, "fraction of a malicious client's listed-label "
                                       "samples that are flipped", gt=0, le=1)
        seed: int = doc(0, "seed of the malicious set and of the poisoned samples")

    @classmethod
    def validate(cls, params: "LabelFlippingAttack.Params", federation: Federation) -> None:
        src, dst = params.original_class_list, params.target_class_list
        if len(src) == 0:
            raise ValueError("original_class_list=[] must name at least one label")
        if len(src) != len(dst):
            raise ValueError(f"original_class_list={src} and target_class_list={dst} must have "
                             f"the same length")
        if len(set(src)) != len(src):
            raise ValueError(f"original_class_list={src} lists a label twice")
        num = params.poisoned_client_num
        if num is not None and not 0 <= num <= federation.client_num_in_total:
            raise ValueError(f"poisoned_client_num={num} must be between 0 and "
                             f"client_num_in_total = {federation.client_num_in_total}")

    def malicious_clients(self, client_num_in_total: int, round_index: int = 0
                          ) -> frozenset[int]:
        """The malicious client ids of round ``round_index`` (with the default fixed selection,
        of every round)."""
        p = self.params
        k = (p.poisoned_client_num if p.poisoned_client_num is not None
             else int(round(p.ratio_of_poisoned_client * client_num_in_total)))
        return malicious_ids(p, round_index, min(k, client_num_in_total), client_num_in_total)

    def is_malicious(self, client_id: int, ctx: RoundContext) -> bool:
        federation = self.setting.federation
        if federation is not None:
            return int(client_id) in self.malicious_clients(federation.client_num_in_total,
                                                            ctx.round_index)
        return bool(seeded_rng(self.params.seed, 1, client_id).random()
                    < self.params.ratio_of_poisoned_client)

    def poison_data(self, features: torch.Tensor, labels: torch.Tensor, client_id: int,
                    ctx: RoundContext) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_malicious(client_id, ctx):
            return features, labels
        report_malicious(ctx, [client_id])
        listed = torch.zeros_like(labels, dtype=torch.bool)
        for src in self.params.original_class_list:
            listed |= labels == src
        if self.params.poisoned_fraction < 1.0:
            where = torch.nonzero(listed.reshape(-1)).reshape(-1).cpu().numpy()
            keep = int(round(self.params.poisoned_fraction * len(where)))
            rng = seeded_rng(self.params.seed, 2, client_id, ctx.round_index)
            chosen = rng.choice(where, size=keep, replace=False) if keep else np.empty(0, int)
            mask = torch.zeros(labels.numel(), dtype=torch.bool)
            mask[torch.as_tensor(chosen, dtype=torch.long)] = True
            listed = mask.reshape(labels.shape).to(labels.device)
        new = labels.clone()
        for src, dst in zip(self.params.original_class_list, self.params.target_class_list):
            new[listed & (labels == src)] = dst
        flipped = ctx.metrics.setdefault("label_flipping_flipped", {})
        flipped[int(client_id)] = flipped.get(int(client_id), 0) + int(listed.sum())
        return features, new
