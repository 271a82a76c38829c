"""Defense chains (``defense_type: [a, b, ...]``): the members run in stage order and compose
as the steps done by hand; the config refuses what cannot compose, naming the members; a chain's
resolved config round-trips through a run's config.yaml; the docs' example runs."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fedsec
from fedsec.aggregation import reference as ref
from fedsec.fl import RunDir, parse_config, run_experiment
from fedsec.security import (Defense, Federation, RoundContext, Stage,
                             aggregate_round, build_defense, doc, fedavg)
from fedsec.security.config import ChainSpec, ComponentSpec, parse_component

from support.experiments import tiny

FED = Federation(10, 10)
DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def chain(*names, federation=FED, **params) -> Defense:
    return build_defense({"enable_defense": True, "defense_type": list(names), **params},
                         federation)


def round_of(updates: np.ndarray, shapes: list[tuple[int, ...]], seed: int = 0):
    """Models w_g + updates[i], split into tensors of ``shapes`` (float32), and their ctx."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=updates.shape[1]).astype(np.float32)
    cuts = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]

    def state(flat: np.ndarray) -> dict:
        return {f"p{k}": torch.from_numpy(part.reshape(s).copy())
                for k, (part, s) in enumerate(zip(np.split(flat, cuts), shapes))}

    models = [(10.0, state((g + u).astype(np.float32))) for u in updates]
    ctx = RoundContext(0, list(range(len(updates))), np.random.default_rng(seed))
    return models, state(g), ctx


def flat(state: dict) -> np.ndarray:
    return np.concatenate([state[k].double().reshape(-1).numpy() for k in sorted(state)])


def clip_then_median_reference(models, global_model, bound: float) -> np.ndarray:
    """Sun et al. 2019's clipping w_g + (w - w_g) / max(1, ||w - w_g|| / bound), then the
    coordinate-wise median (Yin et al. 2018), in float64."""
    g = flat(global_model)
    clipped = []
    for _, state in models:
        y = flat(state) - g
        clipped.append(g + y / max(1.0, np.linalg.norm(y) / bound))
    return np.median(np.stack(clipped), axis=0)


# --- composition ----------------------------------------------------------------------------------

def test_clipping_then_median_by_hand():
    # g = 0; updates (3, 4), (0, 1), (6, 8) clipped to norm 2.5: (1.5, 2), (0, 1), (1.5, 2).
    models = [(1.0, {"w": torch.tensor(v)}) for v in ([3.0, 4.0], [0.0, 1.0], [6.0, 8.0])]
    ctx = RoundContext(0, [0, 1, 2], np.random.default_rng(0))
    defense = chain("norm_diff_clipping", "median", federation=Federation(3, 3), norm_bound=2.5)
    out = aggregate_round(None, defense, models, {"w": torch.zeros(2)}, ctx,
                          fedavg)
    assert out["w"].tolist() == [1.5, 2.0]  # the median alone gives (3, 4)


@pytest.mark.parametrize("n,shapes", [(3, [(1,)]), (5, [(7,), (2, 3)]), (8, [(4, 5), (33,)])])
@pytest.mark.parametrize("order", [("norm_diff_clipping", "median"),
                                   ("median", "norm_diff_clipping")])
@pytest.mark.parametrize("seed", [0, 1])
def test_clipping_then_median_equals_the_reference(n, shapes, order, seed):
    d = sum(int(np.prod(s)) for s in shapes)
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=(n, 1))
    models, g, ctx = round_of(updates, shapes, seed)
    norms = np.sort(np.linalg.norm(updates, axis=1))
    bound = float(norms[n // 2 - 1] + norms[n // 2]) / 2  # between two norms: clips about half
    out = aggregate_round(None, chain(*order, norm_bound=bound), models, g, ctx,
                          fedavg)
    expected = clip_then_median_reference(models, g, bound)
    # float32 models: the clipped values and the median carry float32 rounding of |w| + |y|.
    scale = np.abs(flat(g)).max() + np.abs(updates).max()
    assert np.allclose(flat(out), expected, rtol=0, atol=8 * np.finfo(np.float32).eps * scale), \
        f"seed={seed} n={n} shapes={shapes}"
    assert sorted(ctx.metrics["clipped_clients"]) == sorted(
        i for i in range(n) if np.linalg.norm(updates[i]) > bound)


# --- stage order ----------------------------------------------------------------------------------

CALLS: list[str] = []


class _Recorder(Defense):
    @dataclass
    class Params:
        tag: str = doc("", "the name written into CALLS")


class BeforeA(_Recorder):
    stages = frozenset({Stage.BEFORE_AGGREGATION})

    def defend_before_aggregation(self, models, global_model, ctx):
        CALLS.append("before-a")
        return models[1:]  # drops the first client


class BeforeB(_Recorder):
    stages = frozenset({Stage.BEFORE_AGGREGATION})

    def defend_before_aggregation(self, models, global_model, ctx):
        CALLS.append(f"before-b:{len(models)}")
        return models


class OnRule(_Recorder):
    stages = frozenset({Stage.ON_AGGREGATION})

    def defend_on_aggregation(self, models, global_model, ctx):
        CALLS.append(f"on:{len(models)}")
        return fedavg(models, global_model, ctx)


class After(_Recorder):
    stages = frozenset({Stage.AFTER_AGGREGATION})

    def defend_after_aggregation(self, global_model, ctx):
        CALLS.append("after")
        return global_model


def _path(cls: type) -> str:
    return f"{__name__}:{cls.__name__}"


def test_members_run_in_stage_order_then_listed_order():
    listed = [_path(After), _path(OnRule), _path(BeforeA), _path(BeforeB)]
    spec = parse_component(Defense, {"enable_defense": True, "defense_type": listed}, FED)
    assert spec.as_args()["defense_type"] == [_path(BeforeA), _path(BeforeB), _path(OnRule),
                                              _path(After)]
    models = [(1.0, {"w": torch.full((2,), float(i))}) for i in range(4)]
    ctx = RoundContext(0, [0, 1, 2, 3], np.random.default_rng(0))
    CALLS.clear()
    aggregate_round(None, spec.create(), models, {"w": torch.zeros(2)}, ctx,
                    fedavg)
    assert CALLS == ["before-a", "before-b:3", "on:3", "after"]


def test_a_chain_without_an_on_aggregation_rule_ends_in_the_base_aggregation():
    spec = parse_component(Defense, {"enable_defense": True,
                                     "defense_type": [_path(BeforeA), _path(After)]}, FED)
    models = [(1.0, {"w": torch.full((2,), float(i))}) for i in range(4)]
    ctx = RoundContext(0, [0, 1, 2, 3], np.random.default_rng(0))
    CALLS.clear()
    out = aggregate_round(None, spec.create(), models, {"w": torch.zeros(2)},
                          ctx, fedavg)
    assert CALLS == ["before-a", "after"] and out["w"].tolist() == [2.0, 2.0]  # mean of 1, 2, 3


# --- what the config refuses ----------------------------------------------------------------------

@pytest.mark.parametrize("names,words", [
    (["median", "rfa"], ["2 on-aggregation rules", "median and rfa"]),
    (["krum", "trimmed_mean", "bulyan"], ["2 on-aggregation rules", "trimmed_mean and bulyan"]),
    ([], ["empty list"]),
    (["krum", "multikrum"], ["lists krum twice"]),
    (["krum", "no_such_defense"], ["unknown defense_type 'no_such_defense'", "valid:"]),
])
def test_chains_that_cannot_compose_are_refused(names, words):
    with pytest.raises(ValueError) as err:
        chain(*names)
    for w in words:
        assert w in str(err.value), str(err.value)


def test_flat_keys_reach_every_member_that_declares_them():
    d = chain("krum", "bulyan", byzantine_client_num=1, krum_param_m=9,
              federation=Federation(12, 12))
    assert d.params["krum"].byzantine_client_num == d.params["bulyan"].byzantine_client_num == 1
    assert d.params["krum"].krum_param_m == 9
    with pytest.raises(ValueError, match=re.escape(
            "unknown key 'beta' for the defense chain [krum, median]; valid keys: krum: "
            "byzantine_client_num, krum_param_m; coordinate_wise_median: none")):
        chain("krum", "median", beta=0.1)
    # a member's own check names the member
    with pytest.raises(ValueError, match=re.escape("Bulyan needs client_num_per_round >= 4f + 3 "
                                                   "(bulyan, in the chain [krum, bulyan])")):
        chain("krum", "bulyan", byzantine_client_num=2)


def test_a_shared_key_with_two_defaults_must_be_set():
    with pytest.raises(ValueError, match=re.escape(
            "defense_args: three_sigma and 3sigma_geo in the chain [three_sigma, 3sigma_geo] "
            "share keys whose defaults differ; set each once for both: robust (three_sigma: "
            "True, 3sigma_geo: False), threshold_sigma (three_sigma: 3.0, 3sigma_geo: 1.0)")):
        chain("three_sigma", "3sigma_geo")
    d = chain("three_sigma", "3sigma_geo", threshold_sigma=2.0, robust=True)
    assert d.params["three_sigma"].threshold_sigma == d.params["3sigma_geo"].threshold_sigma == 2


class IntKey(_Recorder):
    stages = frozenset({Stage.BEFORE_AGGREGATION})

    @dataclass
    class Params:
        level: int = doc(1, "an integer")


class FloatKey(_Recorder):
    stages = frozenset({Stage.BEFORE_AGGREGATION})

    @dataclass
    class Params:
        level: float = doc(1.0, "a number")


def test_a_shared_key_of_two_types_is_refused():
    with pytest.raises(ValueError, match="level: .*IntKey and .*FloatKey .*different types"):
        chain(_path(IntKey), _path(FloatKey), level=2)


# --- the resolved config --------------------------------------------------------------------------

def test_resolved_config_round_trips():
    raw = tiny(defense_args={"enable_defense": True, "defense_type": ["median", "norm_clipping"],
                             "norm_bound": 2.0})
    config = parse_config(raw)
    assert isinstance(config.defense, ChainSpec)
    written = yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False))
    assert written["defense_args"] == {"enable_defense": True, "defense_type": [
        "norm_diff_clipping", "coordinate_wise_median"], "norm_bound": 2.0}
    assert parse_config(written).defense == config.defense
    # a list of one is that defense alone
    one = parse_config(tiny(defense_args={"enable_defense": True, "defense_type": ["krum"]}))
    alone = parse_config(tiny(defense_args={"enable_defense": True, "defense_type": "krum"}))
    assert isinstance(one.defense, ComponentSpec) and one.defense == alone.defense


def test_members_state_is_saved_and_restored():
    def models_of(seed):
        gen = torch.Generator().manual_seed(seed)
        return [(1.0, {"w": torch.randn(6, generator=gen)}) for _ in range(4)]

    a = chain("norm_diff_clipping", "foolsgold", federation=Federation(4, 4))
    ctx = RoundContext(0, [0, 1, 2, 3], np.random.default_rng(0))
    aggregate_round(None, a, models_of(0), {"w": torch.zeros(6)}, ctx, fedavg)
    b = chain("norm_diff_clipping", "foolsgold", federation=Federation(4, 4))
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"norm_diff_clipping", "foolsgold"}
    outs = []
    for d in (a, b):
        ctx = RoundContext(1, [0, 1, 2, 3], np.random.default_rng(1))
        outs.append(aggregate_round(None, d, models_of(1), {"w": torch.zeros(6)},
                                    ctx, fedavg))
    assert torch.equal(outs[0]["w"], outs[1]["w"])


def test_the_docs_chain_example_runs_and_its_config_round_trips(tmp_path):
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
                 if "defense_type: [" in b)
    example = yaml.safe_load(block)
    raw = tiny(train_args={"comm_round": 2}, **example)
    config = parse_config(raw)
    run_experiment(config, tmp_path / "run", progress=False)
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert parse_config(stored).defense == config.defense
    records = RunDir(tmp_path / "run").records()
    assert len(records) == 2 and all("detection" in r for r in records)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["defense"] == config.defense.name == ["norm_diff_clipping",
                                                         "coordinate_wise_median"]


# --- pre-aggregators in a chain ------------------------------------------------------------------

def _pre_round(n: int = 7, d: int = 12, seed: int = 0):
    """n models around w_g (two far ones), as float32 state_dicts of two tensors; the float64
    rows X of the models."""
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(n, d))
    updates[:2] += rng.normal(size=(2, d)) * 8  # far clients
    models, g, ctx = round_of(updates, [(3, 2), (d - 6,)], seed)
    return models, g, ctx, np.stack([flat(s) for _, s in models])


PRE = {"nnm": lambda X, g, f: ref.mixed(X, ref.nnm_matrix(X, f)),
       "arc": lambda X, g, f: ref.mixed(X, ref.arc_matrix(X, f, center=g), center=g)}
RULES = {  # name, its keys, the float64 reference of the rule on the mixed rows
    "median": ({}, lambda Y, g: ref.median(Y)),
    "trimmed_mean": ({"beta": 0.2}, lambda Y, g: ref.trimmed_mean(Y, 0.2)),
    "rfa": ({"tol": 1e-10, "max_iter": 2000},
            lambda Y, g: ref.geometric_median(Y, tol=1e-10, max_iter=2000)),
    "bulyan": ({}, lambda Y, g: ref.bulyan(Y, 1)),
    "cclip": ({"tau": 2.0, "iters": 3}, lambda Y, g: ref.centered_clip(Y, 2.0, 3, center=g)),
}


@pytest.mark.parametrize("pre", sorted(PRE))
@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_pre_aggregator_feeds_the_rule_through_pre(pre, rule, monkeypatch):
    models, g, ctx, X = _pre_round()
    keys, reference = RULES[rule]
    defense = chain(pre, rule, federation=Federation(7, 7), byzantine_client_num=1, **keys)
    # One pass for the chain: the mixed models are never materialised.
    monkeypatch.setattr(fedsec.pre, "apply", lambda *a, **k: pytest.fail("materialised"))
    out = aggregate_round(None, defense, models, g, ctx, fedavg)
    assert [type(p).__name__ for p in ctx.pre_aggregators] == [pre.upper()]
    expected = reference(PRE[pre](X, flat(g), 1), flat(g))
    scale = np.abs(X).max()
    assert np.allclose(flat(out), expected, rtol=0, atol=16 * np.finfo(np.float32).eps * scale), \
        f"{pre} + {rule}: largest error {np.abs(flat(out) - expected).max():.3g}"


def test_nnm_then_krum_equals_krum_with_pre_and_on_the_mixed_updates():
    models, g, ctx, X = _pre_round()
    defense = chain("nnm", "krum", federation=Federation(7, 7), byzantine_client_num=1)
    out = aggregate_round(None, defense, models, g, ctx, fedavg)
    states = [s for _, s in models]
    with_pre = fedsec.krum(states, 1, pre=fedsec.pre.NNM(1))
    on_mixed = fedsec.krum(fedsec.pre.apply(states, fedsec.pre.NNM(1)), 1)
    expected = ref.krum(ref.mixed(X, ref.nnm_matrix(X, 1)), 1)
    atol = 16 * np.finfo(np.float32).eps * np.abs(X).max()
    for got in (out, with_pre, on_mixed):
        assert np.allclose(flat(got), expected, rtol=0, atol=atol)
    assert len(ctx.metrics["excluded_clients"]) == 6  # Krum kept one mixed model


def test_pre_aggregators_keep_their_order_and_mix_before_a_filter():
    models, g, ctx, X = _pre_round(n=8, seed=3)
    # bucketing then NNM, both passed to the median: NNM mixes the 4 bucket means
    defense = chain("bucketing", "nnm", "median", federation=Federation(8, 8), bucket_size=2,
                    byzantine_client_num=1)
    out = aggregate_round(None, defense, models, g, ctx, fedavg)
    buckets, nnm = ctx.pre_aggregators
    B = ref.mixed(X, ref.bucketing_matrix(8, 2, buckets.seed))
    expected = ref.median(ref.mixed(B, ref.nnm_matrix(B, 1)))
    atol = 16 * np.finfo(np.float32).eps * np.abs(X).max()
    assert np.allclose(flat(out), expected, rtol=0, atol=atol)
    # NNM before a filter mixes the models itself: clipping then sees the mixed models
    models, g, ctx, X = _pre_round(n=8, seed=3)
    defense = chain("nnm", "norm_diff_clipping", federation=Federation(8, 8), norm_bound=1.0,
                    byzantine_client_num=1)
    out = aggregate_round(None, defense, models, g, ctx, fedavg)
    assert ctx.pre_aggregators == []
    gg = flat(g)
    mixed = ref.mixed(X, ref.nnm_matrix(X, 1)) - gg
    clipped = gg + mixed / np.maximum(1.0, np.linalg.norm(mixed, axis=1) / 1.0)[:, None]
    expected = ref.mean(clipped, [c for c, _ in models])  # NNM keeps each client's count
    assert np.allclose(flat(out), expected, rtol=0, atol=atol)
