"""Neurotoxin (Zhang, Panda, Song, Yang, Mahoney, Gonzalez, Ramchandran, Mittal, ICML 2022,
"Neurotoxin: durable backdoors in federated learning")."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ...params import parse_fields
from ..base import Attack, ClientModel, Federation, RoundContext, Setting, Stage, StateDict
from ..registry import register_attack, resolve
from ..schedule import AttackWindow
from ._backdoor import TriggerBackdoor
from ._common import doc

MASKED_KEY = "neurotoxin_masked_coordinates"


@register_attack("neurotoxin")
class NeurotoxinAttack(Attack):
    """Neurotoxin (Zhang et al. 2022, Algorithm 1): a trigger backdoor whose malicious clients
    train only on the coordinates the benign clients change least, so that benign training
    after the attack stops overwrites the backdoor slowly.

    The paper's attacker ranks the coordinates by the magnitude of the update it "downloads",
    the previous round's aggregate, which approximates the benign clients' next one. Here it
    is the previous round's aggregate of the benign updates (the sample-weighted mean of
    w_i - w_g over the benign clients of the last round in the attack window): the global
    model's change without the attackers' own part, which colluding attackers know. (With
    several attackers in a small round the raw global change is largest where the backdoor's
    own update was, and masking it would undo the attack.) The top ``mask_ratio`` of the
    coordinates (the paper's top-k%, over all layers' parameters together; ties go to the
    earlier coordinate) are masked out. Each malicious client then trains on its poisoned data
    as the clients train, with every gradient projected onto the other coordinates (masked
    entries zeroed before each optimizer step), and its update is zero on the masked
    coordinates. The first round of the window has no previous benign update: its updates are
    the plain backdoor's (``neurotoxin_masked_coordinates`` reports 0). The benign update is
    the attack's state, kept in a run's checkpoint.

    The backdoor is any of fedsec's trigger backdoors, given by ``backdoor``: its
    ``attack_type`` and keys as in ``attack_args`` (default badnets with its defaults; on text
    models badnets' token trigger, the paper's trigger sentence for next-word prediction). Its
    keys decide the malicious clients, the poisoning, the attackers' local epochs and the
    attack-success test set; the attack window (``attack_start_round``, ...) is Neurotoxin's
    own, written beside ``backdoor``. The malicious clients train twice: the simulation's
    ordinary training on their poisoned data, whose result is replaced, and the masked
    training through ``ctx.local_trainer`` (the simulation's: a model trained as that client
    trains, with its seed; under FedNova the upload is that local model, not normalised). The
    paper's attacker also projects onto a norm ball against norm clipping; that belongs to its
    baseline attack, not to Neurotoxin, and is not included.
    """

    stages = frozenset({Stage.DATA_POISONING, Stage.MODEL_POISONING})
    knowledge = "own data; the previous round's benign aggregate update"

    @dataclass
    class Params(AttackWindow):
        backdoor: dict[str, Any] = doc(None, "the trigger backdoor made durable: its "
                                       "attack_type (badnets, blended, dba, edge_case) and "
                                       "keys, as in attack_args",
                                       factory=lambda: {"attack_type": "badnets"})
        mask_ratio: float = doc(0.05, "fraction of the coordinates masked out: the largest "
                                "of the previous round's benign update (the paper's top-k%; "
                                "its code masks 1-5%)", gt=0, lt=1)

    @classmethod
    def validate(cls, params: "NeurotoxinAttack.Params", federation: Federation) -> None:
        inner_cls, inner_params = backdoor_of(params.backdoor)
        inner_cls.validate(inner_params, federation)

    def __init__(self, params=None):
        super().__init__(params)
        inner_cls, inner_params = backdoor_of(self.params.backdoor)
        self.backdoor: TriggerBackdoor = inner_cls(inner_params)
        self._benign_update: StateDict | None = None  # of the last round in the window
        self._poisoned: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # this round's

    def setup(self, setting: Setting) -> None:
        super().setup(setting)
        self.backdoor.setup(setting)  # it draws its malicious clients in the federation

    # --- the backdoor's hooks ------------------------------------------------------------------

    def is_malicious(self, client_id: int, ctx: RoundContext) -> bool:
        return self.backdoor.is_malicious(client_id, ctx)

    def poison_data(self, features: torch.Tensor, labels: torch.Tensor, client_id: int,
                    ctx: RoundContext) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.backdoor.poison_data(features, labels, client_id, ctx)
        if self.backdoor.is_malicious(client_id, ctx):
            self._poisoned[int(client_id)] = (x, y)
        return x, y

    def backdoor_test_set(self, features: torch.Tensor, labels: torch.Tensor,
                          num_classes: int | None = None):
        return self.backdoor.backdoor_test_set(features, labels, num_classes)

    def local_training(self, client_id: int, ctx: RoundContext) -> dict[str, Any]:
        return self.backdoor.local_training(client_id, ctx)

    # --- the masked training -------------------------------------------------------------------

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        poisoned, self._poisoned = self._poisoned, {}
        mine = [i for i, c in enumerate(ctx.client_ids) if int(c) in poisoned]
        previous, self._benign_update = self._benign_update, benign_update(
            models, global_model, [i for i in range(len(models)) if i not in mine])
        if not mine:
            return models
        if ctx.local_trainer is None:
            raise ValueError("neurotoxin trains its malicious clients itself: the round needs "
                             "ctx.local_trainer (the fedsec simulation provides it)")
        model = self.needs("model_factory", "the model its malicious clients train")()
        names = [name for name, _ in model.named_parameters()]
        if previous is None:
            masked = {k: torch.zeros_like(global_model[k], dtype=torch.bool) for k in names}
        else:
            masked = top_k_mask({k: previous[k] for k in names}, self.params.mask_ratio)
        ctx.metrics[MASKED_KEY] = int(sum(int(m.sum()) for m in masked.values()))
        keep = {k: (~m).to(global_model[k].dtype) for k, m in masked.items()}
        hooks = [p.register_hook(lambda g, k=keep[name]: g * k.to(g))
                 for name, p in model.named_parameters()]
        out = list(models)
        try:
            for i in mine:
                cid = int(ctx.client_ids[i])
                x, y = poisoned[cid]
                state = ctx.local_trainer(model, x, y, cid, self.local_training(cid, ctx))
                # Momentum and weight decay act on every coordinate: the upload is projected too.
                state = {k: (torch.where(masked[k].to(v.device), global_model[k].to(v), v)
                             if k in masked else v) for k, v in state.items()}
                out[i] = (models[i][0], state)
        finally:
            for hook in hooks:
                hook.remove()
        return out

    # --- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {} if self._benign_update is None else {"benign_update": self._benign_update}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._benign_update = state.get("benign_update")


def top_k_mask(update: Mapping[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """True on the int(ratio * d) coordinates of largest |update| over all the tensors
    together (d their total size), in the mapping's order; equal magnitudes go to the
    earlier coordinate."""
    sizes = [v.numel() for v in update.values()]
    flat = torch.cat([v.detach().reshape(-1).to("cpu", torch.float64).abs()
                      for v in update.values()])
    k = int(ratio * flat.numel())
    order = torch.argsort(flat, descending=True, stable=True)
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[order[:k]] = True
    parts = torch.split(chosen, sizes)
    return {key: part.reshape(v.shape).to(v.device)
            for (key, v), part in zip(update.items(), parts)}


def backdoor_of(args: Any) -> tuple[type[TriggerBackdoor], Any]:
    """The class and parameters of Neurotoxin's ``backdoor`` mapping, checked as attack_args
    are (keys and bounds)."""
    if not isinstance(args, Mapping) or "attack_type" not in args:
        raise ValueError(f"backdoor={args!r} must be a mapping with an attack_type (badnets, "
                         f"blended, dba, edge_case) and that attack's keys")
    cls = resolve(Attack, args["attack_type"])
    if not issubclass(cls, TriggerBackdoor):
        raise ValueError(f"backdoor.attack_type={args['attack_type']!r} is not a trigger "
                         f"backdoor; valid: badnets, blended, dba, edge_case")

    def unknown(key: str, valid: list[str]) -> str:
        return (f"backdoor: unknown key {key!r} for attack_type {cls.name!r}; valid keys: "
                f"{', '.join(sorted(valid))}")

    values = {k: v for k, v in args.items() if k != "attack_type"}
    for key in (f.name for f in dataclasses.fields(AttackWindow)):
        if key in values:
            raise ValueError(f"backdoor.{key}: the attack window is Neurotoxin's own; write "
                             f"{key} beside backdoor, not inside it")
    return cls, parse_fields(cls.Params, values, "backdoor", unknown)


def benign_update(models: list[ClientModel], global_model: StateDict, benign: list[int]
                  ) -> StateDict | None:
    """The sample-weighted mean of the benign clients' updates w_i - w_g (FedAvg's aggregate
    of them), over the floating entries; None without a benign client."""
    total = sum(models[i][0] for i in benign)
    if not benign or total <= 0:
        return None
    return {k: sum((models[i][0] / total) * (models[i][1][k] - g) for i in benign)
            for k, g in global_model.items() if g.is_floating_point()}
