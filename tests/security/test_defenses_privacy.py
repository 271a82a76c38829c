"""Soteria (Sun et al., CVPR 2021) against fedsec's DLG attack (Zhu et al. 2019).

A client takes one SGD step on one input (the setting DLG inverts exactly); the server runs the
``dlg`` attack on the upload. Fixed before the runs: without Soteria the reconstruction's MSE is
below PLAIN_MSE_MAX (the input is recovered); with Soteria (pruning rate 0.25) it is above
SOTERIA_MSE_MIN, on every seed (an input uniform in [0, 1): guessing its mean gives 1/12 =
0.083). Soteria changes only the representation layer's weight update, columns it prunes.

In a run (the CLIENT_UPDATE stage of the simulation, sequential and batched client training):
ten clients of one digit each take one SGD step; without a defense DLG recovers client 0's
digit (PSNR above 40 dB, tests/fl/test_fl_experiment.py); with ``soteria`` (its default
pruning rate 0.4) the PSNR is below RUN_SOTERIA_PSNR_MAX, fixed before the run.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedsec.fl import Experiment, parse_config
from fedsec.security import Federation, RoundContext, Setting, build_attack
from fedsec.security.defenses.soteria import SoteriaDefense, soteria_update

from support.experiments import tiny

PLAIN_MSE_MAX = 1e-4
SOTERIA_MSE_MIN = 0.05
LR = 0.1
RUN_PLAIN_PSNR_MIN = 40.0
RUN_SOTERIA_PSNR_MAX = 20.0


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
    ctx = RoundContext(0, [0], np.random.default_rng(0), client_batches={0: (x, y)})
    attack = build_attack({"enable_attack": True, "attack_type": "dlg", "dlg_iterations": 300},
                          Federation(1, 1))
    attack.setup(Setting(federation=Federation(1, 1), model_factory=mlp,
                         client_learning_rate=LR))
    attack.reconstruct_data([(1.0, upload)], global_model, ctx)
    return ctx.metrics["dlg"]["mse"]


@pytest.mark.parametrize("seed", [0, 1])
def test_soteria_defeats_dlg_on_a_one_step_update(seed):
    global_model, local, x, y = one_step_upload(seed)
    defense = SoteriaDefense(SoteriaDefense.Params(soteria_pruning_rate=0.25))
    defense.setup(Setting(model_factory=mlp))
    ctx = RoundContext(0, [0], np.random.default_rng(0))
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


def dlg_psnr_in_a_run(defense_args: dict, client_batching: str) -> float:
    attack = {"enable_attack": True, "attack_type": "dlg", "dlg_restarts": 4}
    config = parse_config(tiny(attack_args=attack, defense_args=defense_args,
                               data_args={"train_size": 10},
                               train_args={"comm_round": 1, "client_batching": client_batching}))
    (record,) = list(Experiment(config).rounds())
    return record["dlg"]["psnr"]


@pytest.mark.parametrize("client_batching", ["off", "on"])
def test_soteria_in_a_run_spoils_dlg_of_the_uploads(client_batching):
    plain = dlg_psnr_in_a_run({"enable_defense": False}, client_batching)
    defended = dlg_psnr_in_a_run({"enable_defense": True, "defense_type": "soteria"},
                                 client_batching)
    assert plain > RUN_PLAIN_PSNR_MIN
    assert defended < RUN_SOTERIA_PSNR_MAX, (plain, defended)


def test_soteria_without_the_model_says_what_it_needs():
    global_model, local, x, _ = one_step_upload(0)
    with pytest.raises(ValueError, match="soteria needs setting.model_factory"):
        SoteriaDefense().defend_client_update(local, global_model, x,
                                              RoundContext(0, [0], np.random.default_rng(0)))
