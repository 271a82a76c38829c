"""The built-in attacks of fedsec.security (FedMLSecurity's attack set) against their papers'
formulas, written out again here in float64 NumPy/torch:

- byzantine (random | zero | flip), ALIE (Baruch et al. 2019), IPM (Xie et al. 2019), model
  replacement (Bagdasaryan et al. 2020): malicious clients get exactly the formula, benign
  clients are the same objects, the inputs are never modified, the malicious ids are reported;
- label flipping (Tolpegin et al. 2020): only the listed labels of malicious clients change;
- DLG / iDLG (Zhu et al. 2019, Zhao et al. 2020): a tiny sigmoid MLP's input is reconstructed;
- config errors name key and value; a user's ``module:Class`` attack runs through a round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fedsec
from fedsec.security import (Attack, Federation, RoundContext, Setting, Stage,
                             aggregate_round, build_attack)

FED = Federation(client_num_in_total=20, client_num_per_round=6)
BUFFER = "bn.num_batches_tracked"


# --- helpers (this file only) ---------------------------------------------------------------------

def make_round(n: int = 6, seed: int = 0, dtype=torch.float32):
    """n local models (sample_count, state_dict) around a global model; each state_dict holds
    two float parameters and an integer buffer."""
    g = torch.Generator().manual_seed(seed)
    global_model = {"fc.weight": torch.randn(4, 5, generator=g, dtype=dtype),
                    "fc.bias": torch.randn(4, generator=g, dtype=dtype),
                    BUFFER: torch.tensor(7)}
    models = []
    for i in range(n):
        local = {k: (v + 0.3 * torch.randn(v.shape, generator=g, dtype=dtype)
                     if v.is_floating_point() else torch.tensor(100 + i))
                 for k, v in global_model.items()}
        models.append((float(10 + i), local))
    return models, global_model


def snapshot(models, global_model):
    return [(c, {k: v.clone() for k, v in sd.items()}) for c, sd in models], \
        {k: v.clone() for k, v in global_model.items()}


def assert_unchanged(models, global_model, snap):
    old_models, old_global = snap
    for (c, sd), (c0, sd0) in zip(models, old_models):
        assert c == c0
        for k in sd0:
            assert torch.equal(sd[k], sd0[k]), f"input model modified in place at {k}"
    for k in old_global:
        assert torch.equal(global_model[k], old_global[k]), "global model modified in place"


def ctx_for(n: int = 6, round_index: int = 0, seed: int = 0, ids=None, **extra) -> RoundContext:
    ids = list(range(100, 100 + n)) if ids is None else ids
    return RoundContext(round_index=round_index, client_ids=ids,
                        rng=np.random.default_rng([seed, round_index]), **extra)


def attack(attack_type: str, federation: Federation = FED, **params) -> Attack:
    return build_attack({"enable_attack": True, "attack_type": attack_type, **params}, federation)


def split(models, out, ctx):
    """Positions whose model object was replaced; checks benign ones are the same objects and
    that the malicious ids are reported."""
    assert len(out) == len(models)
    changed = [i for i, (a, b) in enumerate(zip(models, out)) if a[1] is not b[1]]
    for i, (a, b) in enumerate(zip(models, out)):
        if i not in changed:
            assert a is b or (a[0] == b[0] and a[1] is b[1])
        else:
            assert b[0] == a[0], "sample count changed"
            assert torch.equal(b[1][BUFFER], a[1][BUFFER]), "non-float entry changed"
    assert ctx.metrics["malicious_clients"] == sorted(ctx.client_ids[i] for i in changed)
    return changed


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


# --- byzantine ------------------------------------------------------------------------------------

@pytest.mark.parametrize("num", [1, 3])
def test_byzantine_flip_is_exact_and_touches_only_malicious(num):
    models, wg = make_round()
    snap = snapshot(models, wg)
    ctx = ctx_for()
    out = attack("byzantine", attack_mode="flip", byzantine_client_num=num).poison_model(
        models, wg, ctx)
    assert_unchanged(models, wg, snap)
    bad = split(models, out, ctx)
    assert len(bad) == num
    for i in bad:
        for k in ("fc.weight", "fc.bias"):
            expected = wg[k] + (wg[k] - models[i][1][k])
            assert torch.equal(out[i][1][k], expected), k


def test_byzantine_zero_gives_zeros():
    models, wg = make_round()
    ctx = ctx_for()
    out = attack("byzantine", attack_mode="zero", byzantine_client_num=2).poison_model(
        models, wg, ctx)
    bad = split(models, out, ctx)
    assert len(bad) == 2
    for i in bad:
        assert all(torch.count_nonzero(out[i][1][k]) == 0 for k in ("fc.weight", "fc.bias"))
        assert out[i][1]["fc.weight"].dtype == torch.float32


def test_byzantine_random_is_standard_normal_on_malicious_only():
    g = torch.Generator().manual_seed(1)
    wg = {"w": torch.randn(4000, generator=g) + 5.0, BUFFER: torch.tensor(1)}
    models = [(1.0, {"w": wg["w"] + 0.1 * torch.randn(4000, generator=g),
                     BUFFER: torch.tensor(i)}) for i in range(5)]
    snap = snapshot(models, wg)
    ctx = ctx_for(5)
    out = attack("byzantine", attack_mode="random", byzantine_client_num=2).poison_model(
        models, wg, ctx)
    assert_unchanged(models, wg, snap)
    bad = split(models, out, ctx)
    assert len(bad) == 2
    for i in bad:
        w = f64(out[i][1]["w"])
        assert abs(w.mean()) < 0.1 and abs(w.std() - 1.0) < 0.1, (w.mean(), w.std())
    assert not torch.equal(out[bad[0]][1]["w"], out[bad[1]][1]["w"])
    again = attack("byzantine", attack_mode="random", byzantine_client_num=2).poison_model(
        models, wg, ctx_for(5))
    assert all(torch.equal(a[1]["w"], b[1]["w"]) for a, b in zip(out, again)), \
        "same seed and round must give the same noise"


def test_byzantine_choice_count_reproducible_and_varies_across_rounds():
    models, wg = make_round(6)
    atk = attack("byzantine", attack_mode="zero", byzantine_client_num=2)
    chosen = []
    for r in range(12):
        ctx = ctx_for(6, round_index=r)
        split(models, atk.poison_model(models, wg, ctx), ctx)
        assert len(ctx.metrics["malicious_clients"]) == 2
        chosen.append(tuple(ctx.metrics["malicious_clients"]))
        ctx2 = ctx_for(6, round_index=r)
        atk.poison_model(models, wg, ctx2)
        assert ctx2.metrics["malicious_clients"] == ctx.metrics["malicious_clients"]
    assert len(set(chosen)) > 1, "the malicious clients never change across rounds"


def test_byzantine_through_aggregate_round_with_mean():
    models, wg = make_round(4)
    ctx = ctx_for(4)
    atk = attack("byzantine", attack_mode="flip", byzantine_client_num=4)

    def fedavg(ms, g, c):
        return fedsec.mean([sd for _, sd in ms], weights=[n for n, _ in ms])

    new = aggregate_round(atk, None, models, wg, ctx, fedavg)
    w = np.array([n for n, _ in models]) / sum(n for n, _ in models)
    expected = sum(w[i] * (2 * f64(wg["fc.bias"]) - f64(models[i][1]["fc.bias"]))
                   for i in range(4))
    np.testing.assert_allclose(f64(new["fc.bias"]), expected, rtol=0, atol=1e-5)
    assert ctx.metrics["malicious_clients"] == ctx.client_ids


# --- label flipping -------------------------------------------------------------------------------

def test_label_flipping_malicious_set_stable_and_sized():
    atk = attack("label_flipping", ratio_of_poisoned_client=0.25, seed=3)
    sets = [{c for c in range(FED.client_num_in_total)
             if atk.is_malicious(c, ctx_for(round_index=r))} for r in range(4)]
    assert all(s == sets[0] for s in sets)
    assert len(sets[0]) == round(0.25 * FED.client_num_in_total)
    other = attack("label_flipping", ratio_of_poisoned_client=0.25, seed=4)
    assert {c for c in range(20) if other.is_malicious(c, ctx_for())} != sets[0]
    counted = attack("label_flipping", poisoned_client_num=7, seed=3)
    assert sum(counted.is_malicious(c, ctx_for()) for c in range(20)) == 7


def test_label_flipping_changes_only_listed_labels_of_malicious():
    atk = attack("label_flipping", original_class_list=[3, 2, 9], target_class_list=[9, 1, 3],
                 poisoned_client_num=5)
    bad = next(c for c in range(20) if atk.is_malicious(c, ctx_for()))
    good = next(c for c in range(20) if not atk.is_malicious(c, ctx_for()))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, 4, 4, generator=g)
    y = torch.randint(0, 10, (200,), generator=g)
    x0, y0 = x.clone(), y.clone()
    ctx = ctx_for()
    bx, by = atk.poison_data(x, y, good, ctx)
    assert bx is x and by is y
    px, py = atk.poison_data(x, y, bad, ctx)
    assert torch.equal(x, x0) and torch.equal(y, y0), "inputs modified in place"
    assert torch.equal(px, x0)
    expected = y0.clone()
    for src, dst in ((3, 9), (2, 1), (9, 3)):
        expected[y0 == src] = dst  # simultaneous mapping: 3 <-> 9 swap
    assert torch.equal(py, expected)
    assert ctx.metrics["malicious_clients"] == [bad]
    assert ctx.metrics["label_flipping_flipped"][bad] == int(((y0 == 3) | (y0 == 2) | (y0 == 9)).sum())


def test_label_flipping_poisoned_fraction():
    atk = attack("label_flipping", original_class_list=[3], target_class_list=[9],
                 poisoned_client_num=20, poisoned_fraction=0.4)
    y = torch.tensor([3] * 50 + [1] * 30 + [9] * 20)
    _, py = atk.poison_data(torch.zeros(100, 2), y, 4, ctx_for())
    changed = py != y
    assert int(changed.sum()) == 20  # round(0.4 * 50)
    assert torch.all(y[changed] == 3) and torch.all(py[changed] == 9)
    _, again = atk.poison_data(torch.zeros(100, 2), y, 4, ctx_for())
    assert torch.equal(py, again)


# --- model replacement ----------------------------------------------------------------------------

@pytest.mark.parametrize("extra,gamma", [({}, 6 / 0.5), ({"scale_factor": 3.0}, 3.0)])
def test_model_replacement_scales_exactly_by_gamma(extra, gamma):
    models, wg = make_round(6, dtype=torch.float64)
    snap = snapshot(models, wg)
    atk = attack("model_replacement", server_learning_rate=0.5, **extra)
    ctx = ctx_for(6, round_index=2)
    out = atk.poison_model(models, wg, ctx)
    assert_unchanged(models, wg, snap)
    bad = split(models, out, ctx)
    assert len(bad) == 1 and atk.is_malicious(ctx.client_ids[bad[0]], ctx)
    assert sum(atk.is_malicious(c, ctx) for c in ctx.client_ids) == 1
    assert ctx.metrics["model_replacement_gamma"] == pytest.approx(gamma)
    i = bad[0]
    for k in ("fc.weight", "fc.bias"):
        expected = f64(wg[k]) + gamma * (f64(models[i][1][k]) - f64(wg[k]))
        np.testing.assert_allclose(f64(out[i][1][k]), expected, rtol=1e-12, atol=1e-12)



def test_model_replacement_on_lora_factors_replaces_the_adapted_weight():
    """On adapters the server averages A and B factor by factor: the factors scaled by gamma =
    n make the averaged factors the attacker's, so the adapted weight's change B A is the
    attacker's B_X A_X (benign clients at the global factors), not gamma or gamma^2 times it."""
    n, rank, d = 6, 2, 5
    gen = torch.Generator().manual_seed(0)
    glob = {"lora_A": torch.randn(rank, d, generator=gen, dtype=torch.float64),
            "lora_B": torch.randn(d, rank, generator=gen, dtype=torch.float64)}
    attacker = {k: v + torch.randn(v.shape, generator=gen, dtype=torch.float64)
                for k, v in glob.items()}
    atk = attack("model_replacement", malicious_client_id=2)
    models = [(10, dict(glob)) for _ in range(n)]
    models[2] = (10, attacker)
    out = atk.poison_model(models, glob, ctx_for(ids=list(range(n))))
    averaged = {k: sum(state[k] for _, state in out) / n for k in glob}  # FedAvg, equal counts
    for k in glob:
        torch.testing.assert_close(averaged[k], attacker[k], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(averaged["lora_B"] @ averaged["lora_A"],
                               attacker["lora_B"] @ attacker["lora_A"], rtol=1e-12, atol=1e-12)

def test_model_replacement_fixed_attacker_and_rounds():
    models, wg = make_round(6)
    atk = attack("model_replacement", malicious_client_id=3, attack_training_rounds=[1])
    ids = [0, 1, 2, 3, 4, 5]
    assert atk.poison_model(models, wg, ctx_for(ids=ids, round_index=0)) is models
    ctx = ctx_for(ids=ids, round_index=1)
    out = atk.poison_model(models, wg, ctx)
    assert split(models, out, ctx) == [3]


@pytest.mark.parametrize("shape", [(10, 3, 5, 5), (10, 16)])
def test_model_replacement_trigger_changes_only_trigger_pixels_and_labels(shape):
    atk = attack("model_replacement", backdoor_target_label=7, poisoned_fraction=0.6,
                 trigger_size=2, trigger_value=9.0, malicious_client_id=4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    y = torch.randint(0, 7, (shape[0],), generator=g)
    x0, y0 = x.clone(), y.clone()
    ctx = ctx_for(ids=[4, 5, 6])
    assert atk.poison_data(x, y, 5, ctx) == (x, y)
    px, py = atk.poison_data(x, y, 4, ctx)
    assert torch.equal(x, x0) and torch.equal(y, y0), "inputs modified in place"
    poisoned = py != y0
    assert int(poisoned.sum()) == 6
    assert torch.all(py[poisoned] == 7)
    images = px.reshape(shape[0], -1, 4, 4) if len(shape) == 2 else px
    trigger = torch.zeros(images.shape[1:], dtype=torch.bool)
    trigger[..., -2:, -2:] = True
    flat_trigger = trigger.reshape(-1)
    diff = (px != x0).reshape(shape[0], -1)
    assert not diff[~poisoned].any(), "clean samples changed"
    assert not diff[:, ~flat_trigger].any(), "pixels outside the trigger changed"
    assert torch.all(px.reshape(shape[0], -1)[poisoned][:, flat_trigger] == 9.0)
    assert ctx.metrics["malicious_clients"] == [4]

    tx, ty = atk.backdoor_test_set(x0, torch.where(torch.arange(shape[0]) < 3, 7, y0))
    assert tx.shape[0] == shape[0] - 3 and torch.all(ty == 7)
    assert torch.all(tx.reshape(tx.shape[0], -1)[:, flat_trigger] == 9.0)
    assert torch.equal(tx.reshape(tx.shape[0], -1)[:, ~flat_trigger],
                       x0[3:].reshape(shape[0] - 3, -1)[:, ~flat_trigger])


# --- ALIE and IPM ---------------------------------------------------------------------------------

def test_alie_z_max_and_output_match_formula():
    n, m = 10, 2
    fed = Federation(20, n)
    models, wg = make_round(n, seed=5)
    snap = snapshot(models, wg)
    ctx = ctx_for(n)
    out = attack("alie", fed, byzantine_client_num=m).poison_model(models, wg, ctx)
    assert_unchanged(models, wg, snap)
    s = math.floor(n / 2 + 1) - m
    z = NormalDist().inv_cdf((n - s) / n)
    assert ctx.metrics["alie_z"] == pytest.approx(z, rel=1e-12)
    assert z == pytest.approx(0.2533471, abs=1e-6)
    bad = split(models, out, ctx)
    assert len(bad) == m
    benign = [i for i in range(n) if i not in bad]
    for k in ("fc.weight", "fc.bias"):
        stack = np.stack([f64(models[i][1][k]) for i in benign])
        expected = stack.mean(0) - z * stack.std(0)
        for i in bad:
            np.testing.assert_allclose(f64(out[i][1][k]), expected, rtol=1e-6, atol=1e-6)
    assert out[bad[0]][1]["fc.bias"] is not out[bad[1]][1]["fc.bias"]

    ctx = ctx_for(n)
    out = attack("alie", fed, byzantine_client_num=m, z=1.5).poison_model(models, wg, ctx)
    bad = split(models, out, ctx)
    stack = np.stack([f64(models[i][1]["fc.bias"]) for i in range(n) if i not in bad])
    np.testing.assert_allclose(f64(out[bad[0]][1]["fc.bias"]),
                               stack.mean(0) - 1.5 * stack.std(0), rtol=1e-6, atol=1e-6)


def test_ipm_matches_formula_and_opposes_benign_mean():
    models, wg = make_round(6, seed=2)
    snap = snapshot(models, wg)
    ctx = ctx_for(6)
    out = attack("ipm", byzantine_client_num=2, epsilon=0.7).poison_model(models, wg, ctx)
    assert_unchanged(models, wg, snap)
    bad = split(models, out, ctx)
    assert len(bad) == 2
    benign = [i for i in range(6) if i not in bad]
    keys = ("fc.weight", "fc.bias")
    mean_update = {k: np.mean([f64(models[i][1][k]) - f64(wg[k]) for i in benign], 0)
                   for k in keys}
    for i in bad:
        for k in keys:
            np.testing.assert_allclose(f64(out[i][1][k]), f64(wg[k]) - 0.7 * mean_update[k],
                                       rtol=1e-6, atol=1e-6)
        inner = sum(float(np.sum((f64(out[i][1][k]) - f64(wg[k])) * mean_update[k]))
                    for k in keys)
        assert inner < 0


# --- DLG ------------------------------------------------------------------------------------------

def _tiny_mlp() -> torch.nn.Module:
    torch.manual_seed(1234)
    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Sigmoid(),
                               torch.nn.Linear(8, 4))


@pytest.mark.parametrize("use_idlg", [False, True])
def test_dlg_reconstructs_tiny_mlp_input(use_idlg, tmp_path):
    model = _tiny_mlp()
    wg = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1, 16, generator=g)
    y = torch.tensor([2])
    lr = 0.1
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    local = {k: wg[k] - lr * gr for (k, _), gr in zip(model.named_parameters(), grads)}
    other = {k: v + 0.01 for k, v in wg.items()}
    models = [(5.0, local), (5.0, other)]
    snap = snapshot(models, wg)
    ctx = ctx_for(ids=[11, 12], client_batches={11: (x, y)})
    atk = attack("dlg", dlg_iterations=300, use_idlg=use_idlg, save_dir=str(tmp_path))
    atk.setup(Setting(federation=FED, model_factory=_tiny_mlp, client_learning_rate=lr))
    assert aggregate_round(atk, None, models, wg, ctx,
                           lambda ms, gm, c: ms[0][1]) is local  # observes only
    assert_unchanged(models, wg, snap)
    report = ctx.metrics["dlg"]
    rx, ry = atk.last_reconstruction
    mse = float(((rx - x) ** 2).mean())
    assert report["client_id"] == 11
    assert report["mse"] == pytest.approx(mse, rel=1e-6, abs=1e-12)
    assert mse < 1e-4, report
    assert report["psnr"] > 30
    assert int(ry[0]) == 2 and report["label_accuracy"] == 1.0
    if use_idlg:
        assert report["idlg_label"] == 2


def test_dlg_scores_an_unordered_reconstruction_after_matching(monkeypatch):
    # a reconstruction is unordered: the true batch swapped is a perfect one (MSE 0)
    model = _tiny_mlp()
    wg = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 16, generator=g)
    y = torch.tensor([1, 3])
    local = {k: v - 0.01 for k, v in wg.items()}
    ctx = ctx_for(ids=[11, 12], client_batches={11: (x, y)})
    atk = attack("dlg", dlg_iterations=1)
    atk.setup(Setting(federation=FED, model_factory=_tiny_mlp, client_learning_rate=0.1))
    monkeypatch.setattr(atk, "_invert", lambda *args: (0.0, x.flip(0), y.flip(0)))
    atk.reconstruct_data([(2.0, local), (2.0, wg)], wg, ctx)
    report = ctx.metrics["dlg"]
    assert report["matched_reconstruction"] == [1, 0]
    assert report["mse"] == 0.0
    assert report["psnr"] == math.inf and report["psnr_min"] == math.inf
    assert report["label_accuracy"] == 1.0

    # the PSNR's peak is the data's range (data_max - data_min), not the batch's own spread
    monkeypatch.setattr(atk, "_invert", lambda *args: (0.0, x.flip(0) + 0.1, y.flip(0)))
    atk.reconstruct_data([(2.0, local), (2.0, wg)], wg, ctx)
    report = ctx.metrics["dlg"]
    assert report["mse"] == pytest.approx(0.01, rel=1e-5)
    assert report["psnr"] == pytest.approx(20.0, rel=1e-4)


def test_dlg_needs_model_factory():
    models, wg = make_round(2)
    with pytest.raises(ValueError, match="model_factory"):
        attack("dlg").reconstruct_data(models, wg, ctx_for(2))


# --- config ---------------------------------------------------------------------------------------

def _args(attack_type, **kw):
    return {"enable_attack": True, "attack_type": attack_type, **kw}


@pytest.mark.parametrize("args,patterns", [
    (_args("no_such_attack"),
     ["no_such_attack", "byzantine", "label_flipping", "model_replacement", "dlg", "alie", "ipm"]),
    (_args("byzantine", byzantine_num=2), ["byzantine_num", "byzantine_client_num"]),
    (_args("byzantine", byzantine_client_num="2"), ["byzantine_client_num", "'2'"]),
    (_args("byzantine", byzantine_client_num=7), ["byzantine_client_num=7", "6"]),
    (_args("byzantine", byzantine_client_num=-1), ["byzantine_client_num=-1"]),
    (_args("byzantine", attack_mode="flop"), ["attack_mode", "flop", "random", "zero", "flip"]),
    (_args("alie", byzantine_client_num=6), ["byzantine_client_num=6", "5"]),
    (_args("alie", byzantine_client_num=4), ["byzantine_client_num=4", "s=0"]),
    (_args("ipm", epsilon=0), ["epsilon", "0"]),
    (_args("ipm", epsilon=True), ["epsilon", "True"]),
    (_args("label_flipping", original_class_list=[1, 2], target_class_list=[3]),
     ["original_class_list", "target_class_list", r"\[1, 2\]", r"\[3\]"]),
    (_args("label_flipping", ratio_of_poisoned_client=1.5), ["ratio_of_poisoned_client", "1.5"]),
    (_args("label_flipping", poisoned_client_num=21), ["poisoned_client_num=21", "20"]),
    (_args("model_replacement", poisoned_fraction=0.0), ["poisoned_fraction", "0.0"]),
    (_args("model_replacement", scale_factor=-2), ["scale_factor", "-2"]),
    (_args("dlg", attack_client_index=6), ["attack_client_index=6", "5"]),
    (_args("dlg", dlg_iterations=0), ["dlg_iterations=0"]),
])
def test_config_errors_name_key_and_value(args, patterns):
    import re
    with pytest.raises(ValueError) as info:
        build_attack(args, FED)
    message = str(info.value)
    for p in patterns:
        assert re.search(p, message), f"{p!r} not in {message!r}"


def test_aliases_and_disabled():
    assert type(build_attack(_args("a_little_is_enough"), FED)).__name__ == "ALIEAttack"
    assert build_attack({"enable_attack": False, "attack_type": "byzantine"}, FED) is None
    for name in ("byzantine", "label_flipping", "model_replacement", "dlg", "alie", "ipm"):
        atk = build_attack(_args(name), FED)
        assert atk.name == name and atk.stages and atk.__doc__


# --- a user's attack ------------------------------------------------------------------------------

class HalveAttack(Attack):
    """Test attack: the first client's float entries are halved."""

    stages = frozenset({Stage.MODEL_POISONING})

    @dataclass
    class Params:
        factor: float = 0.5

    def poison_model(self, models, global_model, ctx):
        count, sd = models[0]
        ctx.metrics["malicious_clients"] = [ctx.client_ids[0]]
        halved = {k: v * self.params.factor if v.is_floating_point() else v
                  for k, v in sd.items()}
        return [(count, halved)] + list(models[1:])


def test_custom_attack_by_module_path_runs_through_aggregate_round():
    atk = build_attack(_args(f"{__name__}:HalveAttack", factor=0.25), FED)
    assert isinstance(atk, HalveAttack) and atk.params.factor == 0.25
    models, wg = make_round(3)
    ctx = ctx_for(3)
    new = aggregate_round(atk, None, models, wg, ctx,
                          lambda ms, g, c: fedsec.mean([sd for _, sd in ms]))
    expected = (0.25 * f64(models[0][1]["fc.bias"]) + f64(models[1][1]["fc.bias"])
                + f64(models[2][1]["fc.bias"])) / 3
    np.testing.assert_allclose(f64(new["fc.bias"]), expected, rtol=0, atol=1e-6)
    assert ctx.metrics["malicious_clients"] == [100]
    with pytest.raises(ValueError, match="factr"):
        build_attack(_args(f"{__name__}:HalveAttack", factr=0.25), FED)
