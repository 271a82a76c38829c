"""Soteria: the client-side defense against gradient inversion (FedML's ``soteria``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..base import Defense, RoundContext, Stage, StateDict, doc
from ..registry import register_defense


@register_defense("soteria")
class SoteriaDefense(Defense):
    """Soteria (Sun et al., CVPR 2021) at the client: ``soteria_update`` of the client's upload
    before the server, or anyone listening, sees it (``Stage.CLIENT_UPDATE``: the simulation
    passes each client's trained model through it, on the batch of the client's first step,
    before any reconstruction attack observes the uploads). It needs the model
    (``setting.model_factory``), which the simulation gives.
    """

    stages = frozenset({Stage.CLIENT_UPDATE})

    @dataclass
    class Params:
        soteria_pruning_rate: float = doc(0.4, "share of the representation's features whose "
                                               "gradient column is pruned", gt=0, lt=1)

    def defend_client_update(self, local: StateDict, global_model: StateDict,
                             features: torch.Tensor, ctx: RoundContext) -> StateDict:
        """The upload of a client that trained on the batch ``features`` from w_g."""
        model = self.needs("model_factory", "the model whose representation it protects")()
        return soteria_update(model, global_model, local, features,
                              self.params.soteria_pruning_rate)


def representation_layer(model: torch.nn.Module) -> tuple[str, torch.nn.Linear]:
    """The defended layer: the model's last ``nn.Linear`` (its input is the representation r
    Soteria perturbs), with its module name."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("soteria needs a model whose output layer is an nn.Linear (its input "
                         "is the representation it protects)")
    return linears[-1]


def pruning_mask(model: torch.nn.Module, features: torch.Tensor, pruning_rate: float
                 ) -> torch.Tensor:
    """Soteria's mask over the representation's F features: 0 for the floor(rate * F) features
    with the smallest sum over the batch of ||d r_f / d x|| / |r_f| (Sun et al. 2021, Eq. 8-9:
    pruning those perturbs the reconstruction most for the least change of r), 1 elsewhere. A
    feature with r_f = 0 carries nothing in the layer's gradient and is never pruned."""
    _, layer = representation_layer(model)
    captured = {}
    hook = layer.register_forward_hook(lambda m, args, out: captured.setdefault("r", args[0]))
    x = features.detach().clone().requires_grad_(True)
    try:
        model(x)
    finally:
        hook.remove()
    r = captured["r"]                                           # [B, F]
    count = r.shape[1]
    basis = torch.eye(count, dtype=r.dtype, device=r.device)[:, None, :].expand(count, *r.shape)
    (dr_dx,) = torch.autograd.grad(r, x, grad_outputs=basis, is_grads_batched=True)
    norms = dr_dx.reshape(count, r.shape[0], -1).norm(dim=2)    # [F, B]
    with torch.no_grad():
        ratio = (norms / r.detach().abs().T).nan_to_num(nan=math.inf).sum(dim=1)
    mask = torch.ones(count, dtype=r.dtype, device=r.device)
    mask[torch.argsort(ratio, stable=True)[:int(pruning_rate * count)]] = 0
    return mask


def soteria_update(model: torch.nn.Module, global_model: StateDict, local: StateDict,
                   features: torch.Tensor, pruning_rate: float) -> StateDict:
    """The model a client sends with Soteria (Sun, Li, Wang, Chen, Li, CVPR 2021, "Soteria:
    provable defense against privacy leakage in federated learning from representation
    perspective"): its update w_l - w_g with the representation layer's weight update pruned,
    column f zeroed for each feature f of ``pruning_mask`` (computed at w_g on the client's
    batch ``features``). With one SGD step on that batch the update is -lr times the gradient,
    so this is the paper's pruned gradient; every other entry is sent as it is. ``model`` is
    any module with the state_dicts' layout (its weights are overwritten by w_g)."""
    model.load_state_dict(global_model)
    model.eval()
    name, _ = representation_layer(model)
    mask = pruning_mask(model, features, pruning_rate)
    key = f"{name}.weight"
    g = global_model[key]
    out = dict(local)
    out[key] = g + (local[key] - g) * mask.to(local[key])[None, :]
    return out
