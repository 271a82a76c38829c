"""Soteria (Sun et al., CVPR 2021) against fedsec's DLG attack (Zhu et al. 2019).

A client takes one SGD step on one input (the setting DLG inverts exactly); the server runs the
``dlg`` attack on the upload. Fixed before the runs: without Soteria the reconstruction's MSE is
below PLAIN_MSE_MAX (the input is recovered); with Soteria (pruning rate 0.25) it is above
SOTERIA_MSE_MIN, on every seed (an input uniform in [0, 1): guessing its mean gives 1/12 =
0.083). Soteria changes only the representation layer's weight update, columns it prunes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedsec.security import Federation, RoundContext, build_attack
from fedsec.security.defenses.soteria import SoteriaDefense, soteria_update

PLAIN_MSE_MAX = 1e-4
SOTERIA_MSE_MIN = 0.05
LR = 0.1


def mlp() -> torch.nn.Module:
    torch.manual_seed(1234)
    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Sigmoid(), torch.nn.Linear(8, 4))


def one_step_upload(seed: int):
    model = mlp()
    global_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 16, generator=torch.Generator().manual_seed(seed))
    y = torch.tensor([seed % 4])
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    local = {k: global_model[k] - LR * g for (k, _), g in zip(model.named_parameters(), grads)}
    return global_model, local, x, y


def dlg_mse(upload, global_model, x, y) -> float:
    ctx = RoundContext(0, [0], np.random.default_rng(0), federation=Federation(1, 1),
                       model_factory=mlp, client_learning_rate=LR, client_batches={0: (x, y)})
    attack = build_attack({"enable_attack": True, "attack_type": "dlg", "dlg_iterations": 300},
                          Federation(1, 1))
    attack.reconstruct_data([(1.0, upload)], global_model, ctx)
    return ctx.metrics["dlg"]["mse"]


@pytest.mark.parametrize("seed", [0, 1])
def test_soteria_defeats_dlg_on_a_one_step_update(seed):
    global_model, local, x, y = one_step_upload(seed)
    defense = SoteriaDefense(SoteriaDefense.Params(soteria_pruning_rate=0.25))
    ctx = RoundContext(0, [0], np.random.default_rng(0), model_factory=mlp)
    protected = defense.defend_client_update(local, global_model, x, ctx)
    changed = [k for k in local if not torch.equal(local[k], protected[k])]
    assert changed == ["2.weight"]
    update, pruned = local["2.weight"] - global_model["2.weight"], \
        protected["2.weight"] - global_model["2.weight"]
    zero_columns = (pruned == 0).all(dim=0)
    assert int(zero_columns.sum()) == 2  # floor(0.25 * 8) features pruned
    assert torch.equal(pruned[:, ~zero_columns], update[:, ~zero_columns])
    assert dlg_mse(local, global_model, x, y) < PLAIN_MSE_MAX
    assert dlg_mse(protected, global_model, x, y) > SOTERIA_MSE_MIN


def test_soteria_on_a_linear_model_prunes_the_brightest_inputs():
    # logistic regression: the representation is the input itself, d r_f / d x = e_f, so the
    # ratio is 1 / x_f and the brightest pixels' gradient columns go first
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3))
    global_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    local = {k: v + 1.0 for k, v in global_model.items()}
    x = torch.tensor([[0.1, 0.9, 0.0, 0.5, 0.7, 0.2]])
    out = soteria_update(model, global_model, local, x, 0.5)
    kept = (out["1.weight"] != global_model["1.weight"]).all(dim=0).tolist()
    # three of six pruned: 0.9, 0.7 and 0.5 (ratios 1.1, 1.4, 2); the 0 pixel (ratio inf) stays
    assert kept == [True, False, True, False, False, True]
