"""Tests of the built-in defenses (fedsec.security.defenses) and of their configuration."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import fedsec
from fedsec.security import (Defense, Federation, RoundContext, Setting, Stage,
                             aggregate_round, build_defense)
from fedsec.security.registry import names

from support.security import FED, NOISE, make_round

def build(defense_type: str, federation: Federation = FED, **params) -> Defense:
    defense = build_defense({"enable_defense": True, "defense_type": defense_type, **params},
                            federation)
    assert defense is not None
    return defense


def dist(a: dict, b: dict) -> float:
    """L2 distance over all floating entries."""
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum())
                         for k in a if a[k].is_floating_point()))


def max_dev(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max())
               for k in a if a[k].is_floating_point())


def weight_norm(state: dict) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for k, v in state.items()
                         if v.is_floating_point() and "running" not in k))


def weight_dist(a: dict, b: dict) -> float:
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum())
                         for k in a if a[k].is_floating_point() and "running" not in k))


def fedavg(models, global_model, ctx):
    return fedsec.mean([s for _, s in models], weights=[c for c, _ in models])


def run(defense: Defense, models, global_model, ctx):
    return aggregate_round(None, defense, models, global_model, ctx, fedavg)


# --- every registered defense ---------------------------------------------------------------------

ALL = sorted(names(Defense))


def test_all_expected_defenses_are_registered():
    expected = {"norm_diff_clipping", "robust_learning_rate", "krum", "slsgd", "geo_median", "rfa",
                "weak_dp", "cclip", "coordinate_wise_median", "coordinate_wise_trimmed_mean",
                "foolsgold", "crfl", "three_sigma", "bulyan"}
    assert expected <= set(ALL)
    aliases = {"multikrum": "krum", "geometric_median": "geo_median", "wise_median":
               "coordinate_wise_median", "trimmed_mean": "coordinate_wise_trimmed_mean",
               "3sigma": "three_sigma"}
    for alias, name in aliases.items():
        assert type(build(alias)).name == name


# FLTrust trains the server's model on a root set of the experiment's data, which a bare round
# does not have: its runs are in test_defenses_gram_route.py.
@pytest.mark.parametrize("name", [n for n in ALL if n != "fltrust"])
def test_defaults_run_and_keep_structure(name):
    models, g, ctx = make_round()
    defense = build(name)
    assert defense.stages and defense.__doc__ and "20" in defense.__doc__  # cites a year
    out = run(defense, models, g, ctx)
    assert list(out) == list(g)
    for k, v in out.items():
        assert v.shape == g[k].shape and v.dtype == g[k].dtype
        if not v.is_floating_point():
            assert torch.equal(v, g[k] + 1), k  # from a client, untouched
        else:
            assert torch.isfinite(v).all()


@pytest.mark.parametrize("name", ALL)
def test_params_are_documented(name):
    defense = build(name)
    for f in defense.parameter_fields():
        assert f.metadata.get("doc"), f"{name}.{f.name} has no doc"


# --- clipping -------------------------------------------------------------------------------------

def test_norm_diff_clipping_bounds_norm_exactly():
    models, g, ctx = make_round()
    bound = 0.5
    out = build("norm_diff_clipping", norm_bound=bound).defend_before_aggregation(models, g, ctx)
    for i, (count, local) in enumerate(out):
        before = weight_dist(models[i][1], g)
        after = weight_dist(local, g)
        assert count == models[i][0]
        if before > bound:
            assert after == pytest.approx(bound, rel=1e-5)
            # direction kept
            k = "0.weight"
            d0, d1 = models[i][1][k] - g[k], local[k] - g[k]
            assert torch.allclose(d1, d0 * (bound / before), atol=1e-5)
        else:
            assert local is models[i][1]
        assert torch.equal(local["1.running_mean"], models[i][1]["1.running_mean"])
    assert ctx.metrics["clipped_clients"] == [100, 101]


def test_weak_dp_clips_then_adds_seeded_noise():
    models, g, ctx = make_round()
    d = build("weak_dp", norm_bound=0.5, stddev=0.1)
    clipped = d.defend_before_aggregation(models, g, ctx)
    assert max(weight_dist(s, g) for _, s in clipped) <= 0.5 + 1e-5
    agg = fedavg(clipped, g, ctx)
    out1 = d.defend_after_aggregation(agg, RoundContext(0, ctx.client_ids, np.random.default_rng(7)))
    out2 = d.defend_after_aggregation(agg, RoundContext(0, ctx.client_ids, np.random.default_rng(7)))
    noise = torch.cat([(out1[k] - agg[k]).reshape(-1) for k in agg
                       if agg[k].is_floating_point() and "running" not in k])
    assert 0.07 < float(noise.std()) < 0.13
    assert all(torch.equal(out1[k], out2[k]) for k in out1)
    assert torch.equal(out1["1.running_var"], agg["1.running_var"])
    assert torch.equal(out1["1.num_batches_tracked"], agg["1.num_batches_tracked"])
    assert d.stages == {Stage.BEFORE_AGGREGATION, Stage.AFTER_AGGREGATION}


def test_crfl_clips_global_norm_without_noise():
    models, g, ctx = make_round()
    big = {k: (v * 100 if v.is_floating_point() else v) for k, v in g.items()}
    bound = 1.0
    out = build("crfl", clip_threshold=bound, sigma=0.0).defend_after_aggregation(big, ctx)
    assert weight_norm(big) > bound
    assert weight_norm(out) <= bound * (1 + 1e-6)
    assert weight_norm(out) == pytest.approx(bound, rel=1e-5)
    small = build("crfl", clip_threshold=1e6, sigma=0.0).defend_after_aggregation(g, ctx)
    assert all(torch.equal(small[k], g[k]) for k in g)


def test_crfl_noise_and_last_round():
    models, g, ctx = make_round()
    d = build("crfl", clip_threshold=1e6, sigma=0.5, comm_round=3)
    out = d.defend_after_aggregation(g, ctx)
    noise = torch.cat([(out[k] - g[k]).reshape(-1) for k in g
                       if g[k].is_floating_point() and "running" not in k])
    assert 0.4 < float(noise.std()) < 0.6
    last = RoundContext(2, ctx.client_ids, np.random.default_rng(0))
    out_last = d.defend_after_aggregation(g, last)
    assert all(torch.equal(out_last[k], g[k]) for k in g)


# --- selection ------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 5, 8])
def test_krum_excludes_attackers(m):
    models, g, ctx = make_round(bad=(2, 5))
    kept = build("krum", byzantine_client_num=2, krum_param_m=m).defend_before_aggregation(
        models, g, ctx)
    assert len(kept) == m
    assert all(any(s is models[i][1] for i in (0, 1, 3, 4, 6, 7, 8, 9)) for _, s in kept)
    assert {102, 105} <= set(ctx.metrics["excluded_clients"])
    assert len(ctx.metrics["excluded_clients"]) == 10 - m
    scores = ctx.metrics["krum_scores"]
    assert min(scores[102], scores[105]) > max(v for k, v in scores.items() if k not in (102, 105))


def test_three_sigma_excludes_far_outlier_only():
    models, g, ctx = make_round(bad=(4,))
    kept = build("three_sigma").defend_before_aggregation(models, g, ctx)
    assert ctx.metrics["excluded_clients"] == [104]
    assert len(kept) == 9 and all(s is not models[4][1] for _, s in kept)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_sigma_keeps_clean_round(seed):
    models, g, ctx = make_round(bad=(), seed=seed)
    kept = build("3sigma").defend_before_aggregation(models, g, ctx)
    assert len(kept) == 10
    assert ctx.metrics.get("excluded_clients", []) == []


# --- robust aggregation ---------------------------------------------------------------------------

ROBUST = [
    ("coordinate_wise_median", {}, (0, 1, 2)),
    ("wise_median", {}, (3,)),
    ("coordinate_wise_trimmed_mean", {"beta": 0.3}, (0, 1, 2)),
    ("slsgd", {"trim_param_b": 3, "alpha": 1.0}, (0, 1, 2)),
    ("geo_median", {"batch_num": 10}, (0, 1, 2)),
    ("geo_median", {"batch_num": 5}, (0, 1)),  # both attackers in the first group of 2
    ("rfa", {}, (0, 1, 2)),
    ("bulyan", {"byzantine_client_num": 1}, (6,)),
]


@pytest.mark.parametrize("name,params,bad", ROBUST)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_robust_aggregators_ignore_attackers(name, params, bad, sign):
    models, g, ctx = make_round(bad=bad, sign=sign)
    defense = build(name, **params)
    out = run(defense, models, g, ctx)
    plain = fedavg(models, g, ctx)
    assert max_dev(plain, g) > 0.5  # the attack works without the defense
    assert max_dev(out, g) < 5 * NOISE, name


def test_bulyan_reports_unselected():
    models, g, ctx = make_round(n=11, bad=(3, 7))
    out = build("bulyan", Federation(20, 11), byzantine_client_num=2).defend_on_aggregation(
        models, g, ctx)
    assert max_dev(out, g) < 5 * NOISE
    # theta = n - 2f = 7 selected by repeated Krum: 4 not selected. Two identical attackers can
    # be selected late (Krum on a small remaining set), the coordinate stage then trims them.
    assert len(ctx.metrics["excluded_clients"]) == 4
    assert set(ctx.metrics["excluded_clients"]) <= set(range(100, 111))


def test_rfa_downweights_attackers():
    models, g, ctx = make_round(bad=(0, 1, 2))
    build("rfa").defend_on_aggregation(models, g, ctx)
    w = ctx.metrics["client_weights"]
    assert max(w[100], w[101], w[102]) < 0.01 * min(w[i] for i in range(103, 110))


def test_slsgd_moving_average():
    models, g, ctx = make_round(bad=(0, 1, 2))
    out = build("slsgd", trim_param_b=3, alpha=0.5, option_type=2).defend_on_aggregation(
        models, g, ctx)
    trimmed = fedsec.trimmed_mean([s for _, s in models], 0.3)
    for k in g:
        if g[k].is_floating_point():
            assert torch.allclose(out[k], 0.5 * g[k] + 0.5 * trimmed[k], atol=1e-6)
    only = build("slsgd", trim_param_b=3, option_type=1).defend_on_aggregation(models, g, ctx)
    assert all(torch.allclose(only[k].double(), trimmed[k].double()) for k in g)


def test_cclip_bounds_the_step():
    models, g, ctx = make_round(bad=(0, 1, 2))
    tau = 0.2
    out = build("cclip", tau=tau, iters=1).defend_on_aggregation(models, g, ctx)
    assert dist(out, g) <= tau * (1 + 1e-6)
    # attackers move the result by at most 3 * tau / n from the honest-only mean step
    honest = fedsec.mean([s for _, s in models[3:]])
    assert dist(out, g) < dist(fedavg(models, g, ctx), g)
    assert dist(out, honest) < 3 * tau / 10 + 0.7 * dist(honest, g)


def test_robust_learning_rate_formula():
    g = {"w": torch.zeros(4), "n": torch.tensor(3)}
    deltas = [torch.tensor([1.0, 1.0, -1.0, 2.0]), torch.tensor([1.0, -1.0, -1.0, 2.0]),
              torch.tensor([2.0, 1.0, -1.0, -8.0])]
    models = [(1.0, {"w": d, "n": torch.tensor(4)}) for d in deltas]
    ctx = RoundContext(0, [7, 8, 9], np.random.default_rng(0))
    d = build("robust_learning_rate", Federation(10, 3), robust_threshold=3,
              server_learning_rate=2.0)
    out = d.defend_on_aggregation(models, g, ctx)
    mean = torch.stack(deltas).mean(0)
    lr = torch.tensor([2.0, -2.0, 2.0, -2.0])  # |sign sums| = 3, 1, 3, 1
    assert torch.allclose(out["w"], lr * mean)
    assert out["n"].item() == 4
    assert ctx.metrics["flipped_fraction"] == 0.5


def test_robust_learning_rate_resists_backdoor_coordinates():
    models, g, ctx = make_round(bad=(0, 1))
    # honest clients agree on the sign of a shared drift; attackers push the other way
    drifted = [(c, {k: (v + 0.05 if v.is_floating_point() and i >= 2 else v)
                    for k, v in s.items()}) for i, (c, s) in enumerate(models)]
    out = build("robust_learning_rate", robust_threshold=8).defend_on_aggregation(drifted, g, ctx)
    plain = fedavg(drifted, g, ctx)
    assert max_dev(plain, g) > 1.0
    assert ctx.metrics["flipped_fraction"] < 0.05
    # coordinates where the 8 honest agree: lr +1, same as the mean
    k = "0.weight"
    assert torch.allclose(out[k], plain[k], atol=1e-5)


# --- foolsgold ------------------------------------------------------------------------------------

def test_foolsgold_downweights_sybils_over_rounds():
    defense = build("foolsgold")
    sybils = (0, 1, 2)
    for r in range(3):
        models, g, ctx = make_round(bad=(), seed=r)
        direction = {k: torch.full_like(v, 0.05) for k, v in g.items() if v.is_floating_point()}
        models = [(c, {k: (g[k] + direction[k] if i in sybils and g[k].is_floating_point() else v)
                       for k, v in s.items()}) for i, (c, s) in enumerate(models)]
        ctx.round_index = r
        out = defense.defend_on_aggregation(models, g, ctx)
    w = ctx.metrics["client_weights"]
    assert max(w[100], w[101], w[102]) == 0.0
    assert min(w[i] for i in range(103, 110)) > 0.5
    assert {100, 101, 102} <= set(ctx.metrics["excluded_clients"])
    honest = fedsec.mean([s for _, s in models[3:]], weights=[w[100 + i] for i in range(3, 10)])
    assert max_dev(out, honest) < 1e-5
    assert len(defense.histories) == 10
    d = sum(v.numel() for k, v in g.items() if v.is_floating_point() and "running" not in k)
    assert all(h.dtype == torch.float32 and h.numel() == d for h in defense.histories.values())


def test_foolsgold_history_is_bounded_by_client_num_in_total():
    defense = build("foolsgold")
    defense.setup(Setting(federation=Federation(client_num_in_total=15,
                                                client_num_per_round=10)))
    models, g, ctx = make_round(bad=())
    defense.defend_on_aggregation(models, g, ctx)
    models, g, ctx2 = make_round(bad=(), ids_offset=10)  # ids 110..119: 5 new ones, 20 in all
    with pytest.raises(ValueError, match="client_num_in_total=15"):
        defense.defend_on_aggregation(models, g, ctx2)


# --- configuration errors -------------------------------------------------------------------------

CONFIG_ERRORS = [
    ({"defense_type": "krum", "krum_param_n": 3}, ["krum_param_n", "valid keys"]),
    ({"defense_type": "krum", "byzantine_client_num": "two"}, ["byzantine_client_num", "'two'"]),
    ({"defense_type": "crfl", "sigma": "0.1"}, ["sigma", "'0.1'"]),
    ({"defense_type": "krum", "byzantine_client_num": 4}, ["byzantine_client_num=4",
                                                          "client_num_per_round=10"]),
    ({"defense_type": "krum", "krum_param_m": 11}, ["krum_param_m=11", "10"]),
    ({"defense_type": "bulyan", "byzantine_client_num": 2}, ["byzantine_client_num=2", "4f + 3"]),
    ({"defense_type": "trimmed_mean", "beta": 0.5}, ["beta=0.5", "0.5"]),
    ({"defense_type": "slsgd", "trim_param_b": 5}, ["trim_param_b=5", "2b"]),
    ({"defense_type": "norm_diff_clipping", "norm_bound": 0}, ["norm_bound=0"]),
    ({"defense_type": "crfl", "sigma": -1}, ["sigma=-1"]),
    ({"defense_type": "geo_median", "batch_num": 0}, ["batch_num=0"]),
    ({"defense_type": "robust_learning_rate", "robust_threshold": 11}, ["robust_threshold=11"]),
    ({"defense_type": "foolsgold", "kappa": 0}, ["kappa=0"]),
    ({"defense_type": "no_such_defense"}, ["no_such_defense", "krum"]),
]


@pytest.mark.parametrize("args,words", CONFIG_ERRORS)
def test_config_errors_name_key_and_value(args, words):
    with pytest.raises(ValueError) as err:
        build_defense({"enable_defense": True, **args}, FED)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_disabled_defense_builds_nothing():
    assert build_defense({"enable_defense": False, "defense_type": "krum"}, FED) is None


# --- custom defenses and the hook order -----------------------------------------------------------

class MyDefense(Defense):
    """A user defense: records its hooks and aggregates by coordinate-wise median."""

    stages = frozenset({Stage.BEFORE_AGGREGATION, Stage.ON_AGGREGATION, Stage.AFTER_AGGREGATION})

    @dataclass
    class Params:
        tag: str = "x"

    def __init__(self, params=None):
        super().__init__(params)
        self.calls: list[str] = []

    def defend_before_aggregation(self, models, global_model, ctx):
        self.calls.append("before")
        return models[1:]

    def defend_on_aggregation(self, models, global_model, ctx):
        self.calls.append(f"on:{len(models)}")
        return fedsec.median([s for _, s in models])

    def defend_after_aggregation(self, global_model, ctx):
        self.calls.append("after")
        ctx.metrics["tag"] = self.params.tag
        return global_model


def test_custom_defense_by_module_path_runs_through_aggregate_round():
    d = build_defense({"enable_defense": True, "defense_type": f"{__name__}:MyDefense",
                       "tag": "mine"}, FED)
    assert isinstance(d, MyDefense) and d.params.tag == "mine"
    models, g, ctx = make_round(bad=(0, 1))
    out = aggregate_round(None, d, models, g, ctx, fedavg)
    assert d.calls == ["before", "on:9", "after"]
    assert ctx.metrics["tag"] == "mine"
    assert max_dev(out, g) < 5 * NOISE  # median of 9 with one attacker left
    with pytest.raises(ValueError, match="tag"):
        build_defense({"enable_defense": True, "defense_type": f"{__name__}:MyDefense",
                       "tag": 3}, FED)


def test_hook_order_before_only_uses_base_aggregation():
    calls = []

    class BeforeOnly(Defense):
        stages = frozenset({Stage.BEFORE_AGGREGATION})

        def defend_before_aggregation(self, models, global_model, ctx):
            calls.append("before")
            return models

        def defend_after_aggregation(self, global_model, ctx):  # not in stages: never called
            calls.append("after")
            return global_model

    def base(models, global_model, ctx):
        calls.append("base")
        return fedavg(models, global_model, ctx)

    models, g, ctx = make_round(bad=())
    aggregate_round(None, BeforeOnly(), models, g, ctx, base)
    assert calls == ["before", "base"]


def test_two_experiments_keep_separate_state():
    a, b = build("foolsgold"), build("foolsgold")
    models, g, ctx = make_round(bad=())
    a.defend_on_aggregation(models, g, ctx)
    assert len(a.histories) == 10 and len(b.histories) == 0


def _foolsgold_reference(H: np.ndarray, kappa: float) -> np.ndarray:
    """Fung et al. 2020, Algorithm 1, written from the paper with explicit loops."""
    n = len(H)
    cs = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                cs[i, j] = H[i] @ H[j] / (np.linalg.norm(H[i]) * np.linalg.norm(H[j]))
    v = cs.max(axis=1)
    pardoned = cs.copy()
    for i in range(n):
        for j in range(n):
            if i != j and v[j] > v[i]:
                pardoned[i, j] = cs[i, j] * v[i] / v[j]
    alpha = np.clip(1 - pardoned.max(axis=1), 0, 1)
    alpha = alpha / alpha.max()
    alpha = np.where(alpha == 1, 0.99, alpha)
    out = np.empty(n)
    for i in range(n):
        out[i] = 0.0 if alpha[i] == 0 else kappa * (math.log(alpha[i] / (1 - alpha[i])) + 0.5)
    return np.clip(out, 0, 1)


@pytest.mark.parametrize("kappa", [1.0, 0.5])
def test_foolsgold_weights_match_paper_with_pardoning(kappa):
    from fedsec.security.defenses.foolsgold import foolsgold_weights
    # a and b are close (cos 0.9); c is moderately similar to both: pardoning lowers c's
    # similarity by v_c / v_a, which changes its weight
    H = np.array([[1.0, 0.0, 0.0], [0.9, math.sqrt(1 - 0.81), 0.0], [0.5, 0.1, 0.86],
                  [0.0, 0.0, -1.0]])
    got = foolsgold_weights([torch.tensor(h, dtype=torch.float32) for h in H], kappa)
    want = _foolsgold_reference(H, kappa)
    assert np.allclose(got, want, atol=1e-5), (got, want)
    # the reference without pardoning differs on client c: the test can tell
    cs = np.array([[0 if i == j else H[i] @ H[j] / np.linalg.norm(H[i]) / np.linalg.norm(H[j])
                    for j in range(4)] for i in range(4)])
    assert abs((1 - cs[2].max()) - (1 - cs[2].max() * cs[2].max() / cs[0].max())) > 0.05


def test_foolsgold_history_is_the_sum_of_updates():
    defense = build("foolsgold")
    total = None
    for r in range(3):
        models, g, ctx = make_round(bad=(), seed=r)
        defense.defend_on_aggregation(models, g, ctx)
        delta = torch.cat([(models[4][1][k] - g[k]).reshape(-1) for k in g
                           if g[k].is_floating_point() and "running" not in k])
        total = delta if total is None else total + delta
    assert torch.allclose(defense.histories[104], total, atol=1e-6)


def test_cclip_starts_from_the_global_model():
    models, g, ctx = make_round(bad=())
    far = [(c, {k: (v + 1.0 if v.is_floating_point() else v) for k, v in s.items()})
           for c, s in models]
    tau = 0.3
    out = build("cclip", tau=tau, iters=1).defend_on_aggregation(far, g, ctx)
    # every client is about sqrt(d) from w_g, clipped to tau: one step moves exactly ~tau
    assert dist(out, g) == pytest.approx(tau, rel=0.02)
