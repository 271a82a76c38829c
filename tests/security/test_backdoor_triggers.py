"""The trigger backdoors' pieces against float64 NumPy references written from their papers'
definitions, on seeded inputs of several shapes, plus small cases worked out by hand:

- badnets (Gu et al. 2017): the stamped pixels (the square takes the trigger's value, every
  other pixel is kept), in every image layout, and only round(poison_ratio * N) samples of
  the malicious clients poisoned, relabelled;
- blended (Chen et al. 2017): x' = (1 - alpha) x + alpha k with the seeded uniform key k;
- dba (Xie et al. 2020): the local triggers are disjoint, their union is the global trigger,
  each attacker stamps only its own part;
- neurotoxin (Zhang et al. 2022): the top-k mask of the benign update, and a malicious upload
  trained with masked gradients that is unchanged on the masked coordinates;
- the token trigger of the text version, the edge case's crossbar, the durability summary, and
  the bad inputs refused before training.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedsec.fl import Experiment, parse_config
from fedsec.fl.client import LocalTraining, train_local
from fedsec.fl.durability import backdoor_durability
from fedsec.security import Federation, RoundContext, Setting, build_attack
from fedsec.security.attacks.edge_case import continental_crossbar
from fedsec.security.attacks.neurotoxin import benign_update, top_k_mask

FED = Federation(10, 10)
EPS32 = 2.0 ** -23


def attack(name: str, federation: Federation = FED, **kw):
    return build_attack({"enable_attack": True, "attack_type": name, **kw}, federation)


def context(round_index: int = 0, federation: Federation = FED) -> RoundContext:
    return RoundContext(round_index, list(range(federation.client_num_per_round)),
                        np.random.default_rng(round_index))


def images(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


# --- badnets --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,size,row,col", [
    ((5, 1, 28, 28), 3, None, None), ((3, 3, 8, 8), 2, 0, 5), ((4, 2, 5, 7), 5, 0, 2),
    ((2, 1, 6, 6), 1, 4, 0)])
def test_badnets_stamps_the_square_and_keeps_every_other_pixel(shape, size, row, col):
    x = images(shape, seed=sum(shape) + size)
    expected = x.copy()
    r = shape[2] - size if row is None else row
    c = shape[3] - size if col is None else col
    expected[..., r:r + size, c:c + size] = 0.75
    trigger = attack("badnets", trigger_size=size, trigger_row=row, trigger_col=col,
                     trigger_value=0.75).test_trigger(torch.from_numpy(x).float())
    for layout in (shape, (shape[0], *shape[1:]) if shape[1] > 1 else (shape[0], *shape[2:])):
        got = trigger.stamp(torch.from_numpy(x).float().reshape(layout))
        assert got.shape == layout
        # a = 0 keeps x, a = 1 gives the value: both exact in float32
        np.testing.assert_array_equal(got.reshape(shape).double().numpy(),
                                      expected.astype(np.float32), err_msg=f"{shape} {layout}")


def test_badnets_flattened_square_images_and_the_hand_case():
    trigger = attack("badnets", trigger_size=2).test_trigger(torch.zeros(1, 16))
    got = trigger.stamp(torch.zeros(1, 16)).reshape(4, 4)
    assert torch.equal(got, torch.tensor([[0., 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1],
                                          [0, 0, 1, 1]]))


def test_badnets_poisons_round_ratio_of_the_fixed_malicious_clients_samples():
    atk = attack("badnets", poisoned_client_num=2, poison_ratio=0.4, target_label=7, seed=3)
    x = torch.from_numpy(images((10, 1, 6, 6), 0)).float()
    y = torch.arange(10) % 5
    bad = [c for c in range(10) if atk.is_malicious(c, context(0))]
    assert len(bad) == 2 and bad == [c for c in range(10) if atk.is_malicious(c, context(4))]
    ctx = context(0)
    for cid in range(10):
        px, py = atk.poison_data(x, y, cid, ctx)
        if cid not in bad:
            assert px is x and py is y
            continue
        changed = (px != x).flatten(1).any(1) | (py != y)
        assert int(changed.sum()) == 4  # round(0.4 * 10)
        assert (py[changed] == 7).all() and torch.equal(py[~changed], y[~changed])
        assert (px[changed][..., 3:, 3:] == 1).all()
        assert torch.equal(px[changed][..., :3, :], x[changed][..., :3, :])
    assert ctx.metrics["malicious_clients"] == bad
    assert ctx.metrics["backdoor_poisoned_samples"] == {c: 4 for c in bad}


def test_success_set_holds_only_samples_whose_true_label_is_not_the_target():
    atk = attack("badnets", target_label=2)
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 4
    bx, by = atk.backdoor_test_set(x, y, num_classes=4)
    assert len(bx) == 9 and (by == 2).all()
    assert torch.equal(bx[..., :5, :], x[y != 2][..., :5, :])


# --- blended --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,alpha,seed", [((4, 1, 28, 28), 0.2, 0), ((3, 3, 8, 8), 0.5, 7),
                                              ((2, 2, 5, 9), 1.0, 11)])
def test_blended_is_the_convex_blend_with_the_seeded_uniform_key(shape, alpha, seed):
    atk = attack("blended", blend_alpha=alpha, seed=seed)
    x = images(shape, seed + 1)
    key = np.random.default_rng([seed & 0xFFFFFFFF, 3]).random(shape[1:])  # the paper's key
    expected = (1 - alpha) * x + alpha * key
    got = atk.training_trigger(torch.from_numpy(x).float(), 0).stamp(torch.from_numpy(x).float())
    # float32 inputs: x and k rounded, then two products and a sum, each within eps/2
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=4 * EPS32)
    assert 0 <= key.min() and key.max() < 1 and key.std() > 0.25  # uniform on [0, 1)


def test_blended_test_alpha_and_key_depend_on_seed_only():
    x = torch.zeros(1, 1, 4, 4)
    a = attack("blended", blend_alpha=0.1, blend_alpha_test=0.4, seed=5)
    train, test = a.training_trigger(x, 0).stamp(x), a.test_trigger(x).stamp(x)
    assert torch.allclose(test, 4 * train)  # x = 0: alpha k
    assert torch.equal(attack("blended", seed=5).key_pattern(x), a.key_pattern(x))
    assert not torch.equal(attack("blended", seed=6).key_pattern(x), a.key_pattern(x))


# --- dba ------------------------------------------------------------------------------------------

def test_dba_local_triggers_are_the_papers_bars_and_split_the_global_one():
    atk = attack("dba")
    x = torch.zeros(1, 1, 28, 28)
    parts = [t.weight.numpy() for t in atk.local_triggers(x)]
    expected = np.zeros((4, 28, 28))
    for k, (r, c) in enumerate([(0, 0), (0, 6), (3, 0), (3, 6)]):  # Xie et al.'s MNIST pattern
        expected[k, r, c:c + 4] = 1
    np.testing.assert_array_equal(np.stack(parts), expected)
    assert (np.stack(parts).sum(0) <= 1).all()  # disjoint
    np.testing.assert_array_equal(atk.test_trigger(x).weight.numpy(), expected.sum(0))


@pytest.mark.parametrize("num,size,gap,row,col,shape", [
    (4, 4, 2, 0, 0, (3, 1, 28, 28)), (2, 3, 1, 2, 5, (2, 3, 12, 14)), (5, 2, 0, 1, 1, (2, 1, 9, 9))])
def test_dba_union_of_the_stamped_parts_is_the_global_stamp(num, size, gap, row, col, shape):
    atk = attack("dba", local_trigger_num=num, poisoned_client_num=num, trigger_size=size,
                 trigger_gap=gap, trigger_row=row, trigger_col=col, trigger_value=0.9)
    x = torch.from_numpy(images(shape, num)).float()
    once = atk.test_trigger(x).stamp(x)
    in_turn = x
    for part in atk.local_triggers(x):
        in_turn = part.stamp(in_turn)
    assert torch.equal(once, in_turn)
    expected = x.double().numpy().copy()
    for k in range(num):
        r, c = row + (k // 2) * (1 + gap), col + (k % 2) * (size + gap)
        expected[..., r, c:c + size] = np.float32(0.9)
    np.testing.assert_array_equal(once.double().numpy(), expected)


def test_each_dba_attacker_stamps_only_its_own_local_trigger():
    atk = attack("dba", poison_ratio=1.0)
    x, y = torch.zeros(5, 1, 28, 28), torch.ones(5, dtype=torch.long)
    ctx = context(0)
    bad = [c for c in range(10) if atk.is_malicious(c, ctx)]
    parts = atk.local_triggers(x)
    assert len(bad) == 4
    for rank, cid in enumerate(bad):
        px, py = atk.poison_data(x, y, cid, ctx)
        assert torch.equal(px, parts[rank].stamp(x)) and (py == 0).all()
        assert not torch.equal(px, atk.test_trigger(x).stamp(x))


# --- token trigger (text) -------------------------------------------------------------------------

def test_token_trigger_labels_for_next_token_and_language_model_windows():
    atk = attack("badnets", trigger_tokens=[7, 8], target_label=5, poison_ratio=1.0)
    x = torch.arange(30).reshape(3, 10) + 10
    trigger = atk.test_trigger(x)
    px = trigger.stamp(x)
    assert torch.equal(px[:, :-2], x[:, :-2]) and (px[:, -2:] == torch.tensor([7, 8])).all()
    assert (trigger.relabel(x[:, -1], 5) == 5).all()
    shifted = x + 1  # labels[t] = the token after x[t]
    py = trigger.relabel(shifted, 5)
    assert torch.equal(py[:, :-3], shifted[:, :-3])
    assert (py[:, -3:] == torch.tensor([7, 8, 5])).all()
    success = trigger.success_labels(shifted, 5)
    assert (success[:, :-1] == -100).all() and (success[:, -1] == 5).all()


# --- edge case ------------------------------------------------------------------------------------

def test_crossbar_hand_case_through_a_vertical_stroke():
    x = torch.zeros(1, 1, 10, 10)
    x[0, 0, 2:8, 5] = 0.8  # ink rows 2..7 in column 5: middle row 4, half-width max(1, 1/4)
    expected = x.clone()
    expected[0, 0, 4:6, 4:7] = 0.8  # two rows of the brightest value, columns 5 -+ 1
    assert torch.equal(continental_crossbar(x), expected)


def test_edge_case_poisons_with_crossbar_sevens_and_tests_on_the_test_sevens():
    atk = attack("edge_case", poisoned_client_num=10, poison_ratio=0.5)
    x = torch.zeros(6, 1, 10, 10)
    x[:, 0, 2:8, 5] = 1.0
    y = torch.tensor([7, 3, 7, 2, 0, 7])
    ctx = context(0)
    px, py = atk.poison_data(x, y, 0, ctx)
    changed = (px != x).flatten(1).any(1) | (py != y)
    assert int(changed.sum()) == 3 and (py[changed] == 1).all()
    assert torch.equal(px[changed], continental_crossbar(x[:3]))  # all rows are the same 7
    none_x, none_y = atk.poison_data(x, torch.zeros(6, dtype=torch.long), 1, ctx)
    assert none_x is x and ctx.metrics["backdoor_poisoned_samples"][1] == 0
    bx, by = atk.backdoor_test_set(x, y, num_classes=10)
    assert len(bx) == 3 and (by == 1).all() and torch.equal(bx, continental_crossbar(x[y == 7]))


# --- neurotoxin -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes,ratio,seed", [([(3, 4), (5,)], 0.25, 0), ([(17,)], 0.5, 1),
                                              ([(2, 3, 5), (1,), (7, 7)], 0.05, 2)])
def test_neurotoxin_mask_is_the_top_k_of_the_update_magnitudes(sizes, ratio, seed):
    rng = np.random.default_rng(seed)
    update = {f"p{i}": rng.standard_normal(s) for i, s in enumerate(sizes)}
    flat = np.concatenate([v.ravel() for v in update.values()])
    k = int(ratio * flat.size)
    expected = np.zeros(flat.size, bool)
    expected[np.argsort(-np.abs(flat), kind="stable")[:k]] = True
    got = top_k_mask({n: torch.from_numpy(v).float() for n, v in update.items()}, ratio)
    np.testing.assert_array_equal(np.concatenate([m.numpy().ravel() for m in got.values()]),
                                  expected)


def test_neurotoxin_mask_hand_case_with_ties_to_the_earlier_coordinate():
    got = top_k_mask({"a": torch.tensor([0.5, -2.0]), "b": torch.tensor([2.0, 0.1])}, 0.5)
    assert got["a"].tolist() == [False, True] and got["b"].tolist() == [True, False]


def test_benign_update_is_the_sample_weighted_mean_of_the_benign_updates():
    g = {"w": torch.zeros(3), "n": torch.tensor(4)}
    models = [(1.0, {"w": torch.tensor([1., 2, 3])}), (3.0, {"w": torch.tensor([5., 6, 7])}),
              (2.0, {"w": torch.tensor([9., 9, 9])})]
    out = benign_update(models, g, [0, 1])
    assert set(out) == {"w"} and torch.allclose(out["w"], torch.tensor([4., 5, 6]))


def test_neurotoxin_upload_trains_only_the_unmasked_coordinates():
    federation = Federation(4, 4)
    atk = attack("neurotoxin", federation, mask_ratio=0.5,
                 backdoor={"attack_type": "badnets", "poisoned_client_num": 1,
                           "poison_ratio": 1.0})
    torch.manual_seed(0)
    factory = lambda: torch.nn.Linear(16, 3)  # noqa: E731
    global_model = {k: v.detach().clone() for k, v in factory().state_dict().items()}
    atk.setup(Setting(federation=federation, model_factory=factory))
    how = LocalTraining(2, 4, "sgd", 0.5, momentum=0.9)
    trained = []

    def local_trainer(model, x, y, client, overrides):
        trained.append(client)
        return train_local(model, global_model, x.flatten(1), y, how, seed=client).state

    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    bad = next(c for c in range(4) if atk.is_malicious(c, context(0, federation)))
    models = []
    for r in range(2):
        ctx = context(r, federation)
        ctx.local_trainer = local_trainer
        px, py = atk.poison_data(x, y, bad, ctx)
        honest = [(8.0, {k: v + 0.01 * (i + 1) * torch.randn_like(v)
                         for k, v in global_model.items()}) for i in range(4)]
        models = atk.poison_model(honest, global_model, ctx)
        if r == 0:  # no previous benign update yet: nothing masked
            assert ctx.metrics["neurotoxin_masked_coordinates"] == 0
            first_benign = benign_update(honest, global_model, [i for i in range(4) if i != bad])
    masked = top_k_mask({k: first_benign[k] for k in ("weight", "bias")}, 0.5)
    assert ctx.metrics["neurotoxin_masked_coordinates"] == int(0.5 * 51)
    upload = models[bad][1]
    for k, m in masked.items():
        assert torch.equal(upload[k][m], global_model[k][m])
        assert bool((upload[k][~m] != global_model[k][~m]).all())
    assert trained == [bad, bad]
    state = copy.deepcopy(atk.state_dict())
    again = attack("neurotoxin", federation, mask_ratio=0.5,
                   backdoor={"attack_type": "badnets", "poisoned_client_num": 1})
    again.load_state_dict(state)
    assert all(torch.equal(again.state_dict()["benign_update"][k], v)
               for k, v in state["benign_update"].items())


# --- durability summary ---------------------------------------------------------------------------

def test_half_life_counts_rounds_after_the_attack_until_below_half_the_peak():
    values = [0.2, 0.9, 0.8, 0.6, 0.5, 0.44, 0.3]
    records = [{"round": r, "backdoor_accuracy": v} for r, v in enumerate(values)]
    out = backdoor_durability(records, attack_end_round=2)
    assert out == {"backdoor_peak_accuracy": 0.9, "backdoor_half_life_rounds": 3}  # 0.44 @ 5
    assert backdoor_durability(records[:5], 2)["backdoor_half_life_rounds"] is None
    assert backdoor_durability(records, None) == {"backdoor_peak_accuracy": 0.9,
                                                  "backdoor_half_life_rounds": None}


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    ({"attack_type": "badnets", "poison_ratio": 0}, r"attack_args\.poison_ratio=0\.0 must be in \(0, 1\]"),
    ({"attack_type": "blended", "poison_ratio": 1.5}, r"attack_args\.poison_ratio=1\.5 must be in \(0, 1\]"),
    ({"attack_type": "badnets", "trigger_size": 0}, r"attack_args\.trigger_size=0 must be >= 1"),
    ({"attack_type": "badnets", "target_label": -1}, r"attack_args\.target_label=-1 must be >= 0"),
    ({"attack_type": "blended", "blend_alpha": 0}, r"attack_args\.blend_alpha=0\.0 must be in \(0, 1\]"),
    ({"attack_type": "dba", "poisoned_client_num": 2}, r"local_trigger_num=4 .* got 2"),
    ({"attack_type": "edge_case", "target_label": 7}, r"edge_case_source_label=7 must differ"),
    ({"attack_type": "badnets", "attack_start_round": 5, "attack_end_round": 2},
     r"attack_start_round=5 is after attack_end_round=2"),
    ({"attack_type": "neurotoxin", "backdoor": {"attack_type": "byzantine"}},
     r"backdoor\.attack_type='byzantine' is not a trigger backdoor"),
    ({"attack_type": "neurotoxin", "backdoor": {"attack_type": "badnets", "poison_ratio": 2}},
     r"backdoor\.poison_ratio=2\.0 must be in \(0, 1\]"),
    ({"attack_type": "neurotoxin", "backdoor": {"attack_type": "badnets", "attack_end_round": 3}},
     r"backdoor\.attack_end_round: the attack window is Neurotoxin's own"),
    ({"attack_type": "neurotoxin", "mask_ratio": 1.0}, r"attack_args\.mask_ratio=1\.0 must be in \(0, 1\)"),
])
def test_bad_parameters_are_refused_when_the_config_is_parsed(args, message):
    with pytest.raises(ValueError, match=message):
        build_attack({"enable_attack": True, **args}, FED)


def experiment(attack_args: dict) -> Experiment:
    return Experiment(parse_config({
        "data_args": {"dataset": "digits", "train_size": 200, "test_size": 100},
        "model_args": {"model": "lr"},
        "train_args": {"client_num_in_total": 10, "client_num_per_round": 10, "comm_round": 1},
        "attack_args": {"enable_attack": True, **attack_args}}))


@pytest.mark.parametrize("args,message", [
    ({"attack_type": "badnets", "trigger_size": 29},
     r"trigger_size=29 .* does not fit the 28x28 images"),
    ({"attack_type": "badnets", "trigger_size": 4, "trigger_row": 26},
     r"trigger_size=4 \(trigger_row=26.* does not fit"),
    ({"attack_type": "dba", "trigger_size": 13, "trigger_gap": 4},
     r"dba: local trigger 1 \(trigger_size=13, trigger_gap=4.* does not fit"),
    ({"attack_type": "badnets", "target_label": 10},
     r"target_label=10 is not one of the data's 10 classes \(0 to 9\)"),
    ({"attack_type": "edge_case", "edge_case_source_label": 12},
     r"edge_case_source_label=12 is not one of the data's 10 classes"),
    ({"attack_type": "model_replacement", "backdoor_target_label": 10},
     r"backdoor_target_label=10 is not one of the data's 10 classes"),
])
def test_what_needs_the_data_is_refused_when_the_experiment_is_set_up(args, message):
    with pytest.raises(ValueError, match=message):
        experiment(args)
