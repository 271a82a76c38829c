"""FLTrust (Cao, Fang, Liu, Gong 2021): the server's own update, trained on a clean root set,
decides how much each client is trusted."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import fedsec

from ..base import Setting, is_float
from ..metrics import report_weights
from ..registry import register_defense
from ._common import doc
from ._rule_defense import RuleDefense

# The seed of the server's local training is derived as a client's is, from this id (no
# client has it).
SERVER_ID = -1


@register_defense("fltrust")
class FLTrustDefense(RuleDefense):
    """FLTrust (Cao, Fang, Liu, Gong, NDSS 2021, "FLTrust: Byzantine-robust federated learning
    via trust bootstrapping", Algorithm 1). The server holds a root set of
    ``fltrust_root_size`` samples drawn uniformly without replacement, with
    ``fltrust_root_seed``, from the experiment's training split (as the paper's root set is
    drawn from the training data). Each round it trains the global model on it as a client
    trains (``ctx.local_trainer``: the experiment's epochs, batch size, optimizer and learning
    rate), and its update g_0 = w_s - w_g sets the trust of each client update
    g_i = w_i - w_g: TS_i = ReLU(cos(g_i, g_0)); the new global model is
    w_g + sum_i TS_i (||g_0|| / ||g_i||) g_i / sum_j TS_j (``fedsec.fltrust``), w_g itself when
    every score is 0. Sample counts are not used, as in the paper.

    The root set is drawn at setup from ``setting.training_data`` (an engine without it,
    ctx.local_trainer and setting.model_factory, such as the FedML facade, cannot run it). Reports the
    trust scores in client_weights and the clients of score 0 in excluded_clients."""

    @dataclass
    class Params:
        fltrust_root_size: int = doc(100, "samples in the server's root set (the paper's 100)",
                                     ge=1)
        fltrust_root_seed: int = doc(0, "seed of the draw of the root set", ge=0)

    def __init__(self, params=None):
        super().__init__(params)
        self.root: tuple[torch.Tensor, torch.Tensor] | None = None

    def setup(self, setting: Setting) -> None:
        """Draw the root set from the experiment's training split (before any training: a
        root set larger than the split is refused here)."""
        super().setup(setting)
        if setting.training_data is None:
            return  # an engine without the data: server_update says what is missing
        features, labels = setting.training_data
        size = self.params.fltrust_root_size
        if size > len(features):
            raise ValueError(f"fltrust_root_size={size} is more than the {len(features)} "
                             f"training samples")
        rows = np.random.default_rng(self.params.fltrust_root_seed).choice(
            len(features), size, replace=False)
        index = torch.as_tensor(np.sort(rows), device=features.device)
        self.root = (features.index_select(0, index), labels.index_select(0, index))

    def server_update(self, global_model, ctx) -> dict:
        """g_0: the global model trained on the root set, minus the global model."""
        if self.root is None:
            raise ValueError("fltrust has no root set: it draws one from setting.training_data, "
                             "which this engine did not give (fedsec's simulation does)")
        if ctx.local_trainer is None:
            raise ValueError("fltrust trains the server's model with ctx.local_trainer, which "
                             "this engine does not provide")
        model = self.needs("model_factory", "the model the server trains on its root set")()
        device = next(model.parameters()).device
        trained = ctx.local_trainer(model, self.root[0].to(device), self.root[1].to(device),
                                    SERVER_ID, {})
        return {k: trained[k].detach() - v for k, v in global_model.items() if is_float(v)}

    def aggregate(self, models, weights, global_model, ctx, pre):
        value, info = fedsec.fltrust(models, self.server_update(global_model, ctx),
                                     center=global_model, return_info=True)
        report_weights(ctx, info.scores)
        return value, info
