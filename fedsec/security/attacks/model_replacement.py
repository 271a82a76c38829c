"""Model replacement backdoor (Bagdasaryan et al. 2020, "How to backdoor federated learning",
AISTATS), FedML's ``model_replacement``."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Attack, ClientModel, Federation, RoundContext, Stage, StateDict
from ..metrics import report_malicious
from ..registry import register_attack
from ..schedule import AttackParams
from ..state import map_floats
from ._backdoor import malicious_training, poison_rows
from ._common import client_total, doc, fixed_clients, seeded_rng
from .triggers import TokenTrigger, Trigger, image_grid, patch


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

    On LoRA adapters (hf_* models with ``lora``) the state_dict holds each adapted layer's
    factors A and B, and the server averages them factor by factor, as federated LoRA does.
    Scaling each factor's difference the same way makes the averaged factors the attacker's,
    A ~= A_X and B ~= B_X, so the adapted weight W0 + s B A is the attacker's W0 + s B_X A_X:
    the replacement the attack intends, not gamma^2 or gamma times the weight's change (with
    benign clients that stay at the global factors it is exact;
    tests/security/test_attacks.py).

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
        return malicious_training(self.params)

    # --- data poisoning ------------------------------------------------------------------------

    def trigger(self, features: torch.Tensor) -> Trigger:
        """The trigger for inputs like ``features``: for images a ``trigger_size`` square of
        ``trigger_value`` in the bottom-right corner, for token windows the last
        ``trigger_size`` tokens set to ``trigger_token``."""
        p = self.params
        s = p.trigger_size
        if not features.is_floating_point():
            if features.dim() != 2 or s > features.shape[1]:
                raise ValueError(f"model_replacement: token windows must be [N, L] with L >= "
                                 f"trigger_size={s}; got {tuple(features.shape)}")
            return TokenTrigger((p.trigger_token,) * s)
        _, channels, rows, cols = image_grid(features, "model_replacement").shape
        if s > rows or s > cols:
            raise ValueError(f"trigger_size={s} is larger than the images ({rows}x{cols})")
        return patch((channels, rows, cols), rows - s, cols - s, s, s, p.trigger_value,
                     "model_replacement")

    def stamp_trigger(self, features: torch.Tensor) -> torch.Tensor:
        """A copy of ``features`` (a batch of images or token windows) with the trigger on
        every sample."""
        return self.trigger(features).stamp(features)

    def poison_data(self, features: torch.Tensor, labels: torch.Tensor, client_id: int,
                    ctx: RoundContext) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_malicious(client_id, ctx):
            return features, labels
        report_malicious(ctx, [client_id])
        p = self.params

        def poisoned(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            trigger = self.trigger(features)
            return (trigger.stamp(features[rows]),
                    trigger.relabel(labels[rows], p.backdoor_target_label))

        new_x, new_y, _ = poison_rows(features, labels, p.poisoned_fraction,
                                      seeded_rng(p.seed, 1, client_id, ctx.round_index), poisoned)
        return new_x, new_y

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
        keep = last != target
        trigger = self.trigger(features)
        return trigger.stamp(features[keep]), trigger.success_labels(labels[keep], target)

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
