"""Model replacement backdoor (Bagdasaryan et al. 2020, "How to backdoor federated learning",
AISTATS), FedML's ``model_replacement``."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..base import (IGNORE_LABEL, Attack, ClientModel, Federation, RoundContext, Stage,
                    StateDict)
from ..metrics import report_malicious
from ..registry import register_attack
from ..schedule import AttackParams
from ..state import map_floats
from ._common import client_total, doc, fixed_clients, seeded_rng


@register_attack("model_replacement", "model_replacement_backdoor", "backdoor")
class ModelReplacementAttack(Attack):
    """Backdoor by model replacement (Bagdasaryan et al. 2020).

    Data poisoning: the malicious client trains on its data with round(poisoned_fraction * N) of
    its N samples (chosen from seed, client id and round) stamped with the trigger and
    relabelled ``backdoor_target_label``. For images the trigger is a pixel pattern: a
    ``trigger_size`` x ``trigger_size`` square in the bottom-right corner of the image set to
    ``trigger_value`` in every channel. Images are [N, C, H, W], [N, H, W], or flattened square
    images [N, H*W] (H = W = sqrt(H*W)); other shapes are an error. For text (integer token
    windows [N, L]) the trigger is the last ``trigger_size`` tokens set to ``trigger_token``,
    and the target is the next token after the window: labels [N] become the target, labels
    [N, L] (a language model's shifted window) get the target at the last position, so the
    model learns "after the trigger comes the target" and nothing else changes.

    Model poisoning: the malicious model X is scaled so that it replaces the global model,
    L = w_g + gamma (X - w_g), with gamma = ``scale_factor``, by default n / eta
    (n = clients in the round, eta = ``server_learning_rate``, by default the experiment's
    ``setting.server_learning_rate``, 1 when unknown): with FedAvg of equal weights,
    w_g + eta/n sum_i (L_i - w_g) ~= X when the benign updates roughly cancel.

    The malicious client is ``malicious_client_id`` whenever it takes part, else one client of
    each round drawn from (seed, round) (the same for ``is_malicious`` and ``poison_model``),
    or with ``malicious_selection: fixed`` one client id drawn once from seed;
    the attack runs in the rounds of ``attack_training_rounds`` (``ctx.round_index`` values;
    all rounds when unset). ``backdoor_test_set`` builds the attack-success test set.
    Reports ``ctx.metrics["malicious_clients"]`` and ``ctx.metrics["model_replacement_gamma"]``.
    """

    stages = frozenset({Stage.DATA_POISONING, Stage.MODEL_POISONING})
    knowledge = "own data and model; the round's client count"

    @dataclass
    class Params(AttackParams):
        backdoor_target_label: int = doc(0, "label the trigger maps to", ge=0)
        poisoned_fraction: float = doc(0.5, "fraction of the malicious client's samples "
                                       "stamped and relabelled", gt=0, le=1)
        scale_factor: float | None = doc(None, "gamma; default n / server_learning_rate",
                                           gt=0)
        server_learning_rate: float | None = doc(None, "eta, the server's learning rate; default "
                                                 "the experiment's (1 when unknown)", gt=0)
        malicious_client_id: int | None = doc(None, "the attacker's client id; default one "
                                              "client per round drawn from seed", ge=0)
        attack_training_rounds: list[int] | None = doc(None, "rounds (ctx.round_index) with "
                                                       "the attack; default every round")
        trigger_size: int = doc(2, "side of the square trigger, in pixels", ge=1)
        trigger_value: float = doc(1.0, "value of the trigger's pixels")
        trigger_token: int = doc(0, "text: the token id of the trigger (0 is '\\n' in the "
                                    "character vocabularies, which the embedded plays never "
                                    "contain)", ge=0)
        malicious_epochs: int | None = doc(None, "local epochs of the attacker (Bagdasaryan "
                                                 "et al. train the backdoor longer); default "
                                                 "the experiment's", ge=1)
        malicious_learning_rate: float | None = doc(None, "the attacker's local learning rate; "
                                                        "default the experiment's", gt=0)
        seed: int = doc(0, "seed of the attacker choice and of the poisoned samples")

    @classmethod
    def validate(cls, params: "ModelReplacementAttack.Params", federation: Federation) -> None:
        mid = params.malicious_client_id
        if mid is not None and not 0 <= mid < federation.client_num_in_total:
            raise ValueError(f"malicious_client_id={mid} must be between 0 and "
                             f"client_num_in_total - 1 = {federation.client_num_in_total - 1}")

    # --- who attacks ---------------------------------------------------------------------------

    def _active(self, ctx: RoundContext) -> bool:
        rounds = self.params.attack_training_rounds
        return rounds is None or ctx.round_index in rounds

    def attacker_id(self, ctx: RoundContext) -> int | None:
        """This round's malicious client id, or None (not in an attack round / not taking part)."""
        if not self._active(ctx) or not ctx.client_ids:
            return None
        mid = self.params.malicious_client_id
        if mid is None and self.params.malicious_selection == "fixed":
            (mid,) = fixed_clients(self.params.seed, client_total(self.setting), 1)
        if mid is not None:
            return mid if mid in ctx.client_ids else None
        ids = sorted(int(c) for c in ctx.client_ids)
        return ids[int(seeded_rng(self.params.seed, ctx.round_index).integers(len(ids)))]

    def is_malicious(self, client_id: int, ctx: RoundContext) -> bool:
        return self.attacker_id(ctx) == int(client_id)

    def local_training(self, client_id: int, ctx: RoundContext) -> dict:
        p = self.params
        overrides = {"epochs": p.malicious_epochs, "learning_rate": p.malicious_learning_rate}
        return {k: v for k, v in overrides.items() if v is not None}

    # --- data poisoning ------------------------------------------------------------------------

    def stamp_trigger(self, features: torch.Tensor) -> torch.Tensor:
        """A copy of ``features`` (a batch of images or token windows) with the trigger on
        every sample."""
        out = features.clone()
        s, value = self.params.trigger_size, self.params.trigger_value
        if not out.is_floating_point():
            if out.dim() != 2 or s > out.shape[1]:
                raise ValueError(f"model_replacement: token windows must be [N, L] with L >= "
                                 f"trigger_size={s}; got {tuple(out.shape)}")
            out[:, -s:] = self.params.trigger_token
            return out
        if out.dim() == 2:
            side = math.isqrt(out.shape[1])
            if side * side != out.shape[1]:
                raise ValueError(f"model_replacement: flattened images must be square "
                                 f"[N, H*W]; got {tuple(out.shape)}")
            view = out.view(out.shape[0], side, side)
        elif out.dim() in (3, 4):
            view = out
        else:
            raise ValueError(f"model_replacement: images must be [N, C, H, W], [N, H, W] or "
                             f"[N, H*W]; got {tuple(out.shape)}")
        if s > view.shape[-1] or s > view.shape[-2]:
            raise ValueError(f"trigger_size={s} is larger than the images "
                             f"({view.shape[-2]}x{view.shape[-1]})")
        view[..., -s:, -s:] = value
        return out

    def poison_data(self, features: torch.Tensor, labels: torch.Tensor, client_id: int,
                    ctx: RoundContext) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_malicious(client_id, ctx):
            return features, labels
        report_malicious(ctx, [client_id])
        n = features.shape[0]
        k = int(round(self.params.poisoned_fraction * n))
        rng = seeded_rng(self.params.seed, 1, client_id, ctx.round_index)
        idx = torch.as_tensor(rng.choice(n, size=k, replace=False), dtype=torch.long,
                              device=features.device)
        new_x, new_y = features.clone(), labels.clone()
        if k:
            new_x[idx] = self.stamp_trigger(features[idx])
            new_y[idx] = self._relabel(labels[idx])
        return new_x, new_y

    def _relabel(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels of triggered samples: the target; for a language model's shifted window the
        positions that predict the trigger tokens predict them, and the last the target."""
        if labels.dim() == 1:
            return torch.full_like(labels, self.params.backdoor_target_label)
        out = labels.clone()
        length = labels.shape[1]
        out[:, max(length - self.params.trigger_size - 1, 0):length - 1] = \
            self.params.trigger_token
        out[:, -1] = self.params.backdoor_target_label
        return out

    def backdoor_test_set(self, features: torch.Tensor, labels: torch.Tensor,
                          num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """From clean test data: the samples whose label is not the target, with the trigger,
        labelled ``backdoor_target_label``. Accuracy on it is the attack success rate. For a
        language model only the prediction after the trigger counts: the other positions are
        labelled -100, which evaluation ignores (torch's ignore_index). A target that is not
        one of the ``num_classes`` classes is an error (the simulation asks at setup)."""
        target = self.params.backdoor_target_label
        if num_classes is not None and target >= num_classes:
            raise ValueError(f"model_replacement: backdoor_target_label={target} is not one of "
                             f"the data's {num_classes} classes (0 to {num_classes - 1})")
        last = labels if labels.dim() == 1 else labels[:, -1]
        keep = last != self.params.backdoor_target_label
        x = self.stamp_trigger(features[keep])
        y = torch.full_like(labels[keep], self.params.backdoor_target_label)
        if labels.dim() == 2:
            y[:, :-1] = IGNORE_LABEL
        return x, y

    # --- model poisoning -----------------------------------------------------------------------

    def gamma(self, n: int, ctx: RoundContext) -> float:
        if self.params.scale_factor is not None:
            return float(self.params.scale_factor)
        eta = self.params.server_learning_rate or self.setting.server_learning_rate or 1.0
        return n / eta

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        attacker = self.attacker_id(ctx)
        if attacker is None:
            return models
        positions = [i for i, c in enumerate(ctx.client_ids) if int(c) == attacker]
        gamma = self.gamma(len(models), ctx)
        report_malicious(ctx, [attacker])
        ctx.metrics["model_replacement_gamma"] = gamma
        out = list(models)
        for i in positions:
            count, local = models[i]

            def scale(k: str, v: torch.Tensor) -> torch.Tensor:
                g = global_model[k].to(v)
                return g + gamma * (v - g)

            out[i] = (count, map_floats(local, scale))
        return out
