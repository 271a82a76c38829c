"""Data reconstruction from a client's update: inverting gradients (Geiping et al. NeurIPS 2020)
and label leakage by LLG (Wainakh et al. PoPETs 2022).

- the matching term (cosine distance over all parameters), the total variation and the unrolled
  SGD update equal float64 NumPy references written from the paper's definitions;
- LLG is exact on hand cases and on seeded digit batches where its premise holds (distinct
  labels, non-negative features, every present class's row sum negative: asserted first);
- reconstructions are matched to the true images by the least-error permutation;
- a batch of 4 digits is recovered from one local step of the shipped logistic regression, with
  the labels recovered by LLG, and from three local steps (the weight-update setting), to a
  PSNR fixed before the runs: mean over the 4 images >= 20 dB and every image >= 15 dB (an RMS
  error of 0.1 and 0.18 on [0, 1] pixels: digits plainly readable);
- bad input is refused with the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedsec import threads
from fedsec.data import load_dataset
from fedsec.fl import Experiment, parse_config
from fedsec.fl.client import LocalTraining, train_local
from fedsec.models import build_model
from fedsec.security import (Federation, RoundContext, Setting, aggregate_round,
                             build_attack)
from fedsec.security.attacks._reconstruction import match_images, observe_client
from fedsec.security.attacks.inverting_gradients import (cosine_distance, simulated_update,
                                                         total_variation)
from fedsec.security.attacks.revealing_labels import llg_labels

FED = Federation(client_num_in_total=10, client_num_per_round=4)
PSNR_MEAN_DB, PSNR_MIN_DB = 20.0, 15.0  # fixed before the runs (see the module docstring)
DIGIT_SHAPE = (1, 28, 28)


@pytest.fixture(autouse=True)
def thread_policy():
    """fedsec's thread budget (FEDSEC_NUM_THREADS), as an experiment sets it: a tiny model's
    steps on two contended threads run ten times slower than on one."""
    threads.apply()


def attack(attack_type: str, setting: Setting | None = None, **params):
    """The attack built for FED, given ``setting`` (the round's model and learning rate)."""
    atk = build_attack({"enable_attack": True, "attack_type": attack_type, **params}, FED)
    if setting is not None:
        atk.setup(setting)
    return atk


def logistic_regression(seed: int = 0, dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("lr", input_shape=DIGIT_SHAPE, num_classes=10).to(dtype)


@functools.lru_cache(maxsize=1)
def digits():
    return load_dataset("digits", seed=0)


def digit_batch(seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` training digits with distinct labels, drawn from ``seed``."""
    data = digits()
    rng = np.random.default_rng(seed)
    picked, labels = [], set()
    for i in rng.permutation(len(data.train_y)):
        label = int(data.train_y[i])
        if label not in labels:
            picked.append(int(i))
            labels.add(label)
        if len(picked) == size:
            break
    rows = torch.tensor(picked)
    return data.train_x[rows], data.train_y[rows]


def one_client_round(model_factory, x, y, *, steps: int = 1, lr: float = 0.1):
    """A round of two clients from the global model of ``model_factory``: the attacked one
    trains on (x, y) by fedsec's own client code, ``steps`` full-batch SGD steps."""
    model = model_factory()
    global_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    how = LocalTraining(epochs=steps, batch_size=len(x), optimizer="sgd", learning_rate=lr)
    result = train_local(model, global_model, x, y, how, seed=3)
    other = {k: v + 0.01 for k, v in global_model.items()}
    models = [(float(result.num_samples), result.state), (float(result.num_samples), other)]
    ctx = RoundContext(0, [7, 8], np.random.default_rng(0),
                       client_batches={7: result.first_batch})
    setting = Setting(federation=FED, model_factory=model_factory, client_learning_rate=lr)
    return models, global_model, ctx, setting


# --- the matching term, the prior and the simulated update against float64 references ---------

def np_cosine_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    u = np.concatenate([t.ravel() for t in a])
    v = np.concatenate([t.ravel() for t in b])
    return 1.0 - float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))


def np_total_variation(x: np.ndarray) -> float:
    b, c, h, w = x.shape
    horizontal = [abs(x[i, k, r, s + 1] - x[i, k, r, s]) for i in range(b) for k in range(c)
                  for r in range(h) for s in range(w - 1)]
    vertical = [abs(x[i, k, r + 1, s] - x[i, k, r, s]) for i in range(b) for k in range(c)
                for r in range(h - 1) for s in range(w)]
    return float(np.mean(horizontal) + np.mean(vertical))


@pytest.mark.parametrize("shapes", [[(1,)], [(3, 4), (4,)], [(10, 784), (10,)],
                                    [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,)]])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cosine_distance_matches_float64_reference(shapes, seed):
    rng = np.random.default_rng(seed)
    a = [rng.standard_normal(s) for s in shapes]
    b = [rng.standard_normal(s) for s in shapes]
    got = cosine_distance([torch.from_numpy(t) for t in a], [torch.from_numpy(t) for t in b])
    assert float(got) == pytest.approx(np_cosine_distance(a, b), rel=1e-12, abs=1e-14), \
        f"seed={seed} shapes={shapes}"
    # blind to the scale of either side, as the paper intends
    scaled = cosine_distance([3.5 * torch.from_numpy(t) for t in a],
                             [torch.from_numpy(t) for t in b])
    assert float(scaled) == pytest.approx(float(got), rel=1e-12, abs=1e-14)


def test_cosine_distance_hand_case():
    got = cosine_distance([torch.tensor([1.0], dtype=torch.float64),
                           torch.tensor([0.0], dtype=torch.float64)],
                          [torch.tensor([1.0], dtype=torch.float64),
                           torch.tensor([1.0], dtype=torch.float64)])
    assert float(got) == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-15)


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 1, 5, 7), (2, 3, 8, 8), (4, 1, 28, 28)])
def test_total_variation_matches_float64_reference(shape):
    x = np.random.default_rng(sum(shape)).random(shape)
    assert float(total_variation(torch.from_numpy(x))) == pytest.approx(
        np_total_variation(x), rel=1e-12), f"shape={shape}"


def test_total_variation_hand_case():
    # horizontal |1-0|, |4-2| -> mean 1.5; vertical |2-0|, |4-1| -> mean 2.5
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]], dtype=torch.float64)
    assert float(total_variation(x)) == pytest.approx(4.0, rel=1e-15)


def np_sgd_update(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, steps: int,
                  lr: float) -> tuple[np.ndarray, np.ndarray]:
    """w0 - wK (and for the bias) after K full-batch SGD steps of multinomial logistic
    regression with the mean cross-entropy: grad_W = (P - Y)^T X / B."""
    w0, b0 = w.copy(), b.copy()
    flat = x.reshape(len(x), -1)
    onehot = np.eye(w.shape[0])[y]
    for _ in range(steps):
        logits = flat @ w.T + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w = w - lr * (p - onehot).T @ flat / len(x)
        b = b - lr * (p - onehot).mean(0)
    return w0 - w, b0 - b


@pytest.mark.parametrize("steps,batch", [(1, 1), (1, 4), (3, 4), (5, 2)])
def test_simulated_update_matches_numpy_sgd(steps, batch):
    x, y = digit_batch(steps, batch)
    factory = lambda: logistic_regression(steps, torch.float64)  # noqa: E731
    models, global_model, ctx, setting = one_client_round(factory, x.double(), y)
    seen = observe_client(attack("inverting_gradients", setting), models, global_model, ctx,
                          0)
    got = simulated_update(seen, x.double(), y, steps, 0.1)
    want = np_sgd_update(global_model["linear.weight"].numpy(),
                         global_model["linear.bias"].numpy(), x.double().numpy(), y.numpy(),
                         steps, 0.1)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=1e-10, atol=1e-13,
                                   err_msg=f"steps={steps} batch={batch}")


def test_the_true_batch_matches_the_clients_update():
    """The client's real update (fedsec's training loop) is what the simulation gives for its
    true batch: the matching term vanishes there, for one and for several steps."""
    for steps in (1, 3):
        x, y = digit_batch(10 + steps, 4)
        factory = lambda: logistic_regression(1, torch.float64)  # noqa: E731
        models, global_model, ctx, setting = one_client_round(factory, x.double(), y,
                                                              steps=steps)
        seen = observe_client(attack("inverting_gradients", setting), models, global_model,
                              ctx, 0)
        lr = 0.1 if steps > 1 else 1.0
        loss = cosine_distance(simulated_update(seen, x.double(), y, steps, lr), seen.update)
        assert abs(float(loss.detach())) < 1e-12, f"steps={steps}"


# --- LLG label recovery -----------------------------------------------------------------------

def test_llg_hand_case_with_a_repeated_label():
    # row sums g = [-3, 1, -1], batch of 3, C = 3: negatives {0, 2} each once; impact
    # m = (-4 / 3)(1 + 1/3) = -16/9; g becomes [-11/9, 1, 7/9]; the third label is argmin: 0.
    update = torch.tensor([[-1.0, -2.0], [0.5, 0.5], [-1.0, 0.0]])
    assert llg_labels(update, 3) == [0, 0, 2]
    # the same with the repeat on class 2
    assert llg_labels(update[[2, 1, 0]], 3) == [0, 2, 2]


def test_llg_hand_case_from_a_gradient():
    """Logistic regression with zero weights predicts 1/C for every class. Inputs x1 = [1, 0],
    x2 = [0, 2], both of class 0, C = 3: the row sums are g_c = (1/B) sum_i (1/3 - y_ic)|x_i|_1
    = [-1, 1/2, 1/2]; step 1 names class 0 (m = (-1/2)(4/3) = -2/3, g_0 -> -1/3); step 2
    takes the argmin, class 0 again."""
    model = torch.nn.Linear(2, 3)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    grad, _ = torch.autograd.grad(F.cross_entropy(model(x), torch.tensor([0, 0])),
                                  list(model.parameters()))
    np.testing.assert_allclose(grad.sum(-1).numpy(), [-1.0, 0.5, 0.5], rtol=1e-6)
    assert llg_labels(grad, 2) == [0, 0]
    grad, _ = torch.autograd.grad(F.cross_entropy(model(x), torch.tensor([2, 1])),
                                  list(model.parameters()))
    assert llg_labels(grad, 2) == [1, 2]


def llg_premise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether every present class's row sum is negative, for distinct labels: for each
    sample i of class c, (1 - p_ic)|x_i|_1 > sum_{j != i} p_jc |x_j|_1."""
    p = F.softmax(model(x), -1).detach()
    norms = x.flatten(1).sum(-1)
    return all(bool((1 - p[i, c]) * norms[i]
                    > sum(p[j, c] * norms[j] for j in range(len(x)) if j != i))
               for i, c in enumerate(y.tolist()))


@pytest.mark.parametrize("batch", [1, 2, 4, 6])
def test_llg_is_exact_where_its_premise_holds(batch):
    """Distinct labels and non-negative features (pixels into the untrained logistic
    regression): every absent class's row sum is positive, so where every present class's is
    negative (``llg_premise``), LLG returns exactly the batch's labels. Over 20 seeded batches
    the premise must hold for at least half, so the check cannot pass empty."""
    held = 0
    for seed in range(20):
        x, y = digit_batch(100 + seed, batch)
        model = logistic_regression(seed)
        if not llg_premise(model, x, y):
            continue
        held += 1
        grad = torch.autograd.grad(F.cross_entropy(model(x), y), [model.linear.weight])[0]
        assert llg_labels(0.1 * grad, batch) == sorted(y.tolist()), f"seed={seed}"  # SGD step
    assert held >= 10, f"the premise held for {held} of 20 batches"


# --- matching reconstructions to the true batch ------------------------------------------------

@pytest.mark.parametrize("n_rec,n_true", [(1, 1), (4, 4), (5, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_match_images_is_the_least_error_assignment(n_rec, n_true, seed):
    rng = np.random.default_rng(seed)
    rec, true = rng.random((n_rec, 1, 3, 3)), rng.random((n_true, 1, 3, 3))
    order, mse = match_images(torch.from_numpy(rec), torch.from_numpy(true))
    errors = ((true[:, None] - rec[None]) ** 2).reshape(n_true, n_rec, -1).mean(-1)
    best = min(itertools.permutations(range(n_rec), n_true),
               key=lambda perm: sum(errors[i, j] for i, j in enumerate(perm)))
    assert tuple(order) == best
    np.testing.assert_allclose(mse.numpy(), [errors[i, j] for i, j in enumerate(best)],
                               rtol=1e-12)


def test_match_images_hand_case():
    true = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    rec = torch.tensor([[0.9, 1.0], [0.0, 0.2]], dtype=torch.float64)
    order, mse = match_images(rec, true)
    assert order == [1, 0]
    np.testing.assert_allclose(mse.numpy(), [0.02, 0.005], rtol=1e-12)


# --- the attack: a digit batch of 4 recovered -------------------------------------------------

def test_recovers_a_digit_batch_of_4_from_one_step_with_llg_labels(tmp_path):
    x, y = digit_batch(2020, 4)
    models, global_model, ctx, setting = one_client_round(logistic_regression, x, y)
    snapshot = [{k: v.clone() for k, v in sd.items()} for _, sd in models]
    atk = attack("inverting_gradients", setting, max_iterations=300, save_dir=str(tmp_path))
    out = aggregate_round(atk, None, models, global_model, ctx,
                          lambda ms, gm, c: ms[0][1])
    assert out is models[0][1]  # observes only
    for (_, sd), before in zip(models, snapshot):
        assert all(torch.equal(sd[k], before[k]) for k in before)
    report = ctx.metrics["inverting_gradients"]
    assert report["client_id"] == 7 and report["label_source"] == "llg"
    assert report["labels"] == sorted(y.tolist()) and report["label_accuracy"] == 1.0
    assert report["psnr"] >= PSNR_MEAN_DB and report["psnr_min"] >= PSNR_MIN_DB, report
    # the report scores the matched pairs
    rx, _ = atk.last_reconstruction
    truth = ctx.client_batches[7][0]
    order = report["matched_reconstruction"]
    mse = ((rx[order] - truth) ** 2).flatten(1).mean(-1)
    assert report["mse"] == pytest.approx(float(mse.mean()), rel=1e-5)
    assert report["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-5)
    assert (tmp_path / "inverting_gradients_round0_client7.png").stat().st_size > 0
    # the optimisation is what recovers it: the dummy data after one step is nowhere near
    ctx.metrics.clear()
    attack("inverting_gradients", setting, max_iterations=1).reconstruct_data(
        models, global_model, ctx)
    assert ctx.metrics["inverting_gradients"]["psnr"] < 10


def test_recovers_a_digit_batch_of_4_from_three_local_steps():
    """The paper's weight-update setting: three full-batch steps of lr 0.5, unrolled."""
    x, y = digit_batch(2021, 4)
    models, global_model, ctx, setting = one_client_round(logistic_regression, x, y, steps=3,
                                                          lr=0.5)
    atk = attack("inverting_gradients", setting, max_iterations=300, local_steps=3,
                 known_labels=True)
    atk.reconstruct_data(models, global_model, ctx)
    report = ctx.metrics["inverting_gradients"]
    assert report["label_source"] == "known" and report["local_steps"] == 3
    assert report["psnr"] >= PSNR_MEAN_DB and report["psnr_min"] >= PSNR_MIN_DB, report


def test_restarts_keep_the_best_match():
    x, y = digit_batch(7, 2)
    models, global_model, ctx, setting = one_client_round(logistic_regression, x, y)
    attack("inverting_gradients", setting, max_iterations=20, restarts=3).reconstruct_data(
        models, global_model, ctx)
    report = ctx.metrics["inverting_gradients"]
    assert len(report["restart_losses"]) == 3
    assert report["matching_loss"] == min(report["restart_losses"])


def test_inside_a_run_both_attacks_read_a_client_batch(tmp_path):
    """10 clients of 4 digits, batch 4, one epoch: each update is one step on one batch."""
    raw = {"data_args": {"dataset": "digits", "partition_method": "iid", "train_size": 40,
                         "test_size": 100},
           "model_args": {"model": "lr"},
           "train_args": {"client_num_in_total": 10, "client_num_per_round": 4,
                          "comm_round": 1, "batch_size": 4, "epochs": 1,
                          "learning_rate": 0.1}}
    ig = {"enable_attack": True, "attack_type": "inverting_gradients", "max_iterations": 300,
          "save_dir": str(tmp_path)}
    (record,) = list(Experiment(parse_config({**raw, "attack_args": ig})).rounds())
    report = record["inverting_gradients"]
    assert report["client_id"] == record["clients"][0]
    assert report["label_accuracy"] == 1.0
    assert report["psnr"] >= PSNR_MEAN_DB and report["psnr_min"] >= PSNR_MIN_DB, report
    assert len(list(tmp_path.glob("inverting_gradients_round0_client*.png"))) == 1
    llg = {"enable_attack": True, "attack_type": "revealing_labels_from_gradients",
           "attack_client_index": 2}
    (record,) = list(Experiment(parse_config({**raw, "attack_args": llg})).rounds())
    report = record["revealing_labels_from_gradients"]
    assert report["client_id"] == record["clients"][2] and len(report["labels"]) == 4
    assert report["label_accuracy"] == 1.0


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("params,patterns", [
    ({"restarts": 0}, ["restarts=0", ">= 1"]),
    ({"tv_weight": -0.1}, ["tv_weight=-0.1", ">= 0"]),
    ({"max_iterations": 0}, ["max_iterations=0", ">= 1"]),
    ({"step_size": 0}, ["step_size=0", "positive"]),
    ({"local_steps": 0}, ["local_steps=0", ">= 1"]),
    ({"data_min": 1.0, "data_max": 1.0}, ["data_min=1.0", "data_max=1.0"]),
    ({"attack_client_index": 4}, ["attack_client_index=4", "3"]),
    ({"known_labels": "yes"}, ["known_labels", "'yes'"]),
    ({"restart": 2}, ["restart", "restarts"]),
])
def test_config_errors_name_key_value_and_what_is_allowed(params, patterns):
    with pytest.raises(ValueError) as info:
        attack("inverting_gradients", **params)
    for p in patterns:
        assert re.search(re.escape(p), str(info.value)), f"{p!r} not in {info.value}"


def test_revealing_labels_config_errors():
    with pytest.raises(ValueError, match=re.escape("attack_client_index=-1")):
        attack("revealing_labels_from_gradients", attack_client_index=-1)


def _two_digits_round(**ctx_changes):
    x, y = digit_batch(5, 2)
    models, global_model, ctx, setting = one_client_round(logistic_regression, x, y)
    for key, value in ctx_changes.items():  # the round's, or the experiment's constants
        if hasattr(setting, key):
            setting = dataclasses.replace(setting, **{key: value})
        else:
            setattr(ctx, key, value)
    return models, global_model, ctx, setting


@pytest.mark.parametrize("params,ctx_changes,pattern", [
    ({}, {"client_batches": {}}, "not in ctx.client_batches; set input_shape"),
    ({"known_labels": True, "input_shape": [1, 28, 28], "batch_size": 2},
     {"client_batches": {}}, "known_labels needs the client's true batch"),
    ({"input_shape": [1, 28, 28], "batch_size": 1}, {"client_batches": {}},
     "trained on 2 samples in batches of 1"),
    ({"input_shape": [784], "batch_size": 2}, {"client_batches": {}},
     "tv_weight=0.0001 needs image inputs"),
    ({"local_steps": 2}, {"client_learning_rate": None}, "needs setting.client_learning_rate"),
    ({}, {"model_factory": None}, "needs setting.model_factory"),
])
def test_round_time_errors_say_what_is_missing(params, ctx_changes, pattern):
    models, global_model, ctx, setting = _two_digits_round(**ctx_changes)
    with pytest.raises(ValueError, match=re.escape(pattern)):
        attack("inverting_gradients", setting, max_iterations=1, **params).reconstruct_data(
            models, global_model, ctx)


def test_fedsec_list_shows_the_keys_with_bounds(capsys):
    from fedsec.cli import main
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("  inverting_gradients"):]
    block = block[:re.search(r"\n  \S", block).start()]
    for line in ("restarts = 1  (>= 1)", "tv_weight = 0.0001  (>= 0)", "local_steps = 1  (>= 1)",
                 "step_size = 0.1  (> 0)", "known_labels = False"):
        assert line in block, line
    assert "revealing_labels_from_gradients (also: " in out
