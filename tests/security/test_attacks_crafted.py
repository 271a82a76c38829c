"""The crafted updates of the optimised model-poisoning attacks against float64 NumPy references
written again here from their papers' definitions, on seeded clouds of several shapes, plus
small cases worked out by hand:

- min_max / min_sum (Shejwalkar & Houmansadr 2021): gamma by the halving search with distances
  taken directly over the coordinates (the attack takes them from a Gram matrix);
- fang (Fang et al. 2020): the directed deviation, the lambda bound and halving with Krum scored
  from its definition; the trimmed-mean/median attack's intervals and draws;
- mimic (Karimireddy et al. 2022): the client chosen from a d x d covariance's top eigenvector
  (the attack uses the n x n Gram matrix), the warm-up;
- gaussian, sign_flipping, inf (ByzFL): the formulas, and inf's updates excluded by the
  defenses;
- alie_optimal / ipm_optimal (ByzFL): the factor of ByzFL's line search against a median /
  trimmed mean written out in NumPy, and against no defense.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fedsec
from fedsec.security import (Federation, RoundContext, aggregate_round,
                             build_attack, build_defense, fedavg)
from fedsec.security.attacks._common import fixed_clients

BUFFER = "bn.num_batches_tracked"
SHAPES = {"small": (("fc.weight", (2, 3)), ("fc.bias", (2,))),
          "wide": (("conv.weight", (4, 3, 5)), ("fc.bias", (17,)))}


# --- helpers (this file only) ---------------------------------------------------------------------

def cloud(n: int, shapes, seed: int, dtype=torch.float64, equal_counts: bool = False,
          drift: float = 0.2):
    """n local models around a global model: a shared drift (so the mean update is not 0) plus
    client noise of different scales; each state_dict also holds an integer buffer."""
    g = torch.Generator().manual_seed(seed)
    global_model = {k: torch.randn(s, generator=g, dtype=dtype) for k, s in shapes}
    drift = {k: drift * torch.randn(s, generator=g, dtype=dtype) for k, s in shapes}
    models = []
    for i in range(n):
        local = {k: global_model[k] + drift[k] + (0.05 + 0.05 * i)
                 * torch.randn(s, generator=g, dtype=dtype) for k, s in shapes}
        local[BUFFER] = torch.tensor(100 + i)
        models.append((10.0 if equal_counts else float(10 + i), local))
    global_model[BUFFER] = torch.tensor(7)
    return models, global_model


def flat(state) -> np.ndarray:
    return np.concatenate([v.detach().to(torch.float64).reshape(-1).numpy()
                           for v in state.values() if v.is_floating_point()])


def ctx_for(n: int, federation: Federation, round_index: int = 0, seed: int = 0
            ) -> RoundContext:
    return RoundContext(round_index, list(range(n)), np.random.default_rng([seed, round_index]))


def attack(federation: Federation, attack_type: str, **params):
    return build_attack({"enable_attack": True, "attack_type": attack_type, **params}, federation)


def poisoned(atk, models, global_model, ctx):
    """The attack's output and its malicious positions (client ids are positions here)."""
    out = atk.poison_model(models, global_model, ctx)
    return out, list(ctx.metrics["malicious_clients"])


def known_rows(models, bad, knowledge: str) -> np.ndarray:
    rows = bad if knowledge == "partial" else [i for i in range(len(models)) if i not in bad]
    return np.stack([flat(models[i][1]) for i in rows])


def pairwise_sq(X: np.ndarray) -> np.ndarray:
    return ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)


# --- min_max / min_sum ----------------------------------------------------------------------------

def reference_agr_agnostic(Y: np.ndarray, perturbation: str, rule: str, gamma_init: float,
                           tau: float) -> tuple[float, np.ndarray]:
    """Shejwalkar & Houmansadr, Algorithm 1: the largest gamma the halving search accepts for
    mu - gamma p, distances over the coordinates; returns (gamma, mu - gamma p)."""
    mu = Y.mean(0)
    p = {"unit_vec": lambda: mu / np.linalg.norm(mu), "std": lambda: Y.std(0, ddof=1),
         "sign": lambda: np.sign(mu)}[perturbation]()
    D = pairwise_sq(Y)
    if rule == "min_max":
        threshold, score = D.max(), lambda m: ((Y - m) ** 2).sum(1).max()
    else:
        threshold, score = D.sum(1).max(), lambda m: ((Y - m) ** 2).sum()
    gamma, step, success = gamma_init, gamma_init, 0.0
    while abs(success - gamma) > tau:
        if score(mu - gamma * p) <= threshold:
            success, gamma = gamma, gamma + step / 2
        else:
            gamma -= step / 2
        step /= 2
    return success, mu - success * p


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("perturbation", ["unit_vec", "std", "sign"])
@pytest.mark.parametrize("rule", ["min_max", "min_sum"])
@pytest.mark.parametrize("knowledge", ["full", "partial"])
def test_agr_agnostic_gamma_and_update_match_reference(shape, perturbation, rule, knowledge):
    n, m = 9, 3
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES[shape], seed=len(shape) + n)
    atk = attack(fed, rule, byzantine_client_num=m, perturbation=perturbation,
                 attacker_knowledge=knowledge)
    ctx = ctx_for(n, fed)
    out, bad = poisoned(atk, models, wg, ctx)
    assert len(bad) == m
    Y = known_rows(models, bad, knowledge) - flat(wg)
    gamma, update = reference_agr_agnostic(Y, perturbation, rule, 10.0, 1e-5)
    assert gamma > 0, "the reference accepts no gamma: the case tests nothing"
    assert ctx.metrics[f"{rule}_gamma"] == pytest.approx(gamma, rel=1e-9, abs=1e-12)
    for i in bad:
        np.testing.assert_allclose(flat(out[i][1]), flat(wg) + update, rtol=1e-9, atol=1e-12)
        assert torch.equal(out[i][1][BUFFER], models[i][1][BUFFER])
    for i in set(range(n)) - set(bad):
        assert out[i] is models[i]


@pytest.mark.parametrize("rule", ["min_max", "min_sum"])
def test_agr_agnostic_float32_models_follow_the_reference(rule):
    n, m = 8, 2
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES["wide"], seed=3, dtype=torch.float32)
    ctx = ctx_for(n, fed, seed=1)
    out, bad = poisoned(attack(fed, rule, byzantine_client_num=m, perturbation="std"),
                        models, wg, ctx)
    Y = known_rows(models, bad, "full") - flat(wg)
    gamma, update = reference_agr_agnostic(Y, "std", rule, 10.0, 1e-5)
    # The Gram matrix of float32 models may use float32 products: distances within 1e-4 of
    # each other move the accepted gamma by as much, relatively.
    assert ctx.metrics[f"{rule}_gamma"] == pytest.approx(gamma, rel=1e-4)
    scale = np.abs(update).max()
    for i in bad:
        np.testing.assert_allclose(flat(out[i][1]) - flat(wg), update, atol=1e-4 * scale)


@pytest.mark.parametrize("rule", ["min_max", "min_sum"])
def test_agr_agnostic_hand_case(rule):
    """Benign updates 0, 1, 2 (one coordinate), unit vector p = 1 (mu = 1): w = 1 - gamma.
    Min-max: max_i (w - y_i)^2 = (1 + gamma)^2 <= max pairwise 4 gives gamma <= 1. Min-sum:
    sum_i (w - y_i)^2 = 2 + 3 gamma^2 <= max_i sum_j (y_i - y_j)^2 = 5 gives gamma <= 1.
    The search stops when its next candidate is within tau of the last accepted gamma, so the
    bracket [accepted, rejected] around the boundary is at most 2 tau wide."""
    fed = Federation(4, 4)
    (bad,) = fixed_clients(0, 4, 1)
    values = iter([0.0, 1.0, 2.0])
    models = [(1.0, {"w": torch.tensor([9.0 if i == bad else next(values)],
                                       dtype=torch.float64)}) for i in range(4)]
    wg = {"w": torch.zeros(1, dtype=torch.float64)}
    ctx = ctx_for(4, fed)
    out = attack(fed, rule, byzantine_client_num=1, malicious_selection="fixed").poison_model(
        models, wg, ctx)
    gamma = ctx.metrics[f"{rule}_gamma"]
    assert 1.0 - 2e-5 <= gamma <= 1.0
    assert float(out[bad][1]["w"]) == pytest.approx(1.0 - gamma, abs=1e-15)


# --- fang -----------------------------------------------------------------------------------------

def krum_index(X: np.ndarray, f: int) -> int:
    """Blanchard et al.: the lowest score, the sum of squared distances to the n - f - 2
    nearest others (the lowest index on ties)."""
    D = pairwise_sq(X)
    n = len(X)
    scores = [np.sort(np.delete(D[i], i))[:n - f - 2].sum() for i in range(n)]
    return int(np.argmin(scores))


def reference_fang_krum(W: np.ndarray, wg: np.ndarray, n: int, c: int, threshold: float
                        ) -> tuple[float, np.ndarray]:
    """Fang et al. Sec. 4.2 from the known models W: s = sign(mean(W) - w_Re), lambda from the
    upper bound, halved until Krum (over W and c copies of w_Re - lambda s) picks a copy."""
    s = np.sign(W.mean(0) - wg)
    d, k = len(wg), len(W)
    dist = np.sqrt(pairwise_sq(W))
    neighbours = min(n - c - 2, k - 1)
    sums = [np.sort(np.delete(dist[i], i))[:neighbours].sum() for i in range(k)]
    lam = (min(sums) / ((n - 2 * c - 1) * math.sqrt(d))
           + max(np.linalg.norm(W - wg, axis=1)) / math.sqrt(d))

    def chosen(lam):
        X = np.vstack([W] + [wg - lam * s] * c)
        neighbours_sim = min(max(1, len(X) - c - 2), len(X) - 1)
        return krum_index(X, len(X) - 2 - neighbours_sim) >= k

    while not chosen(lam) and lam >= threshold:
        lam /= 2
    return lam, wg - lam * s


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("n,c,knowledge,drift", [(10, 2, "full", 0.2), (12, 3, "full", 0.2),
                                                 (12, 3, "partial", 0.2), (10, 2, "full", 0.0)])
def test_fang_krum_lambda_and_update_match_reference(shape, n, c, knowledge, drift):
    """(The clouds without drift are heterogeneous enough for Krum to pick the crafted model at
    a lambda above the threshold.)"""
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES[shape], seed=n + c, drift=drift)
    ctx = ctx_for(n, fed, seed=c)
    out, bad = poisoned(attack(fed, "fang", byzantine_client_num=c, fang_target="krum",
                               attacker_knowledge=knowledge), models, wg, ctx)
    lam, crafted = reference_fang_krum(known_rows(models, bad, knowledge), flat(wg), n, c, 1e-5)
    assert ctx.metrics["fang_lambda"] == pytest.approx(lam, rel=1e-9)
    for i in bad:
        np.testing.assert_allclose(flat(out[i][1]), crafted, rtol=1e-9, atol=1e-12)
    if knowledge == "full" and lam >= 1e-5:
        # The search stopped because Krum picked the crafted model: the core's Krum (f = c)
        # picks it from the round the server sees.
        chosen = fedsec.krum([state for _, state in out], f=c, return_info=True)[1].used
        assert chosen[0] in bad


def reference_trim_bounds(W: np.ndarray, wg: np.ndarray, b: float, partial: bool):
    """Fang et al. Sec. 4.3: per coordinate the interval each attacker draws from."""
    s, mean = np.sign(W.mean(0) - wg), W.mean(0)
    if partial:
        sigma = W.std(0)
        low = np.where(s < 0, mean + 3 * sigma, np.where(s > 0, mean - 4 * sigma, mean))
        high = np.where(s < 0, mean + 4 * sigma, np.where(s > 0, mean - 3 * sigma, mean))
        return low, high
    w_max, w_min = W.max(0), W.min(0)
    low = np.where(s < 0, w_max, np.where(s > 0, np.where(w_min > 0, w_min / b, w_min * b), mean))
    high = np.where(s < 0, np.where(w_max > 0, w_max * b, w_max / b),
                    np.where(s > 0, w_min, mean))
    return low, high


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("target", ["trimmed_mean", "median"])
@pytest.mark.parametrize("knowledge", ["full", "partial"])
def test_fang_trim_attack_matches_reference_draws(shape, target, knowledge):
    n, m, seed = 9, 3, 5
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES[shape], seed=seed)
    ctx = ctx_for(n, fed, seed=seed)
    out, bad = poisoned(attack(fed, "fang", byzantine_client_num=m, fang_target=target,
                               attacker_knowledge=knowledge), models, wg, ctx)
    low, high = reference_trim_bounds(known_rows(models, bad, knowledge), flat(wg), 2.0,
                                      knowledge == "partial")
    # The attack's draws from ctx.rng, replayed: the malicious choice, then per attacker and
    # parameter one uniform array.
    rng = np.random.default_rng([seed, 0])
    assert sorted(int(i) for i in rng.choice(n, size=m, replace=False)) == bad
    for i in bad:
        u = np.concatenate([rng.random(s).reshape(-1) for _, s in SHAPES[shape]])
        np.testing.assert_allclose(flat(out[i][1]), low + u * (high - low), rtol=1e-12,
                                   atol=1e-15)
    assert not np.allclose(flat(out[bad[0]][1]), flat(out[bad[1]][1])), \
        "each attacker draws its own values"


def test_fang_trim_hand_case():
    """Benign values per coordinate (w_Re = 0): [1, 2, 1.5] (s = +1, w_min = 1 > 0: [0.5, 1]),
    [-1, -2, -1.5] (s = -1, w_max = -1 < 0: [-1, -0.5]), [-1, -2, 0.5] (s = -1, w_max = 0.5:
    [0.5, 1]), [2, 1, -0.5] (s = +1, w_min = -0.5: [-1, -0.5])."""
    fed = Federation(5, 5)
    bad = sorted(fixed_clients(0, 5, 2))
    columns = iter(torch.tensor([[1.0, -1.0, -1.0, 2.0], [2.0, -2.0, -2.0, 1.0],
                                 [1.5, -1.5, 0.5, -0.5]], dtype=torch.float64))
    models = [(1.0, {"w": torch.full((4,), 7.0, dtype=torch.float64) if i in bad
                     else next(columns)}) for i in range(5)]
    wg = {"w": torch.zeros(4, dtype=torch.float64)}
    out = attack(fed, "fang", byzantine_client_num=2, fang_target="trimmed_mean",
                 malicious_selection="fixed").poison_model(models, wg, ctx_for(5, fed))
    low, high = np.array([0.5, -1.0, 0.5, -1.0]), np.array([1.0, -0.5, 1.0, -0.5])
    for i in bad:
        w = out[i][1]["w"].numpy()
        assert ((low <= w) & (w <= high)).all(), w


# --- mimic ----------------------------------------------------------------------------------------

def reference_mimic_choice(Y: np.ndarray) -> int:
    """The update farthest along the top eigenvector of the d x d covariance of the centered
    updates (sign: the largest projection in magnitude positive)."""
    Yc = Y - Y.mean(0)
    _, vectors = np.linalg.eigh(Yc.T @ Yc)
    projection = Yc @ vectors[:, -1]
    if projection[np.argmax(np.abs(projection))] < 0:
        projection = -projection
    return int(np.argmax(projection))


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mimic_copies_the_client_of_the_reference(shape, seed):
    n, m = 8, 2
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES[shape], seed=seed)
    ctx = ctx_for(n, fed, seed=seed)
    out, bad = poisoned(attack(fed, "mimic", byzantine_client_num=m), models, wg, ctx)
    benign = [i for i in range(n) if i not in bad]
    target = benign[reference_mimic_choice(known_rows(models, bad, "full") - flat(wg))]
    assert ctx.metrics["mimic_target"] == target
    for i in bad:
        np.testing.assert_array_equal(flat(out[i][1]), flat(models[target][1]))


def test_mimic_hand_case_and_warmup():
    """Updates (0, 0), (1, 0), (5, 0.1) and the attacker's: the spread is along the first axis
    and (5, 0.1) lies farthest along it. After the warm-up of 2 rounds the copied client stays
    the one chosen in round 1 even when another would be chosen."""
    fed = Federation(4, 4)
    (bad,) = fixed_clients(0, 4, 1)
    atk = attack(fed, "mimic", byzantine_client_num=1, malicious_selection="fixed",
                 mimic_warmup_rounds=2)
    wg = {"w": torch.zeros(2, dtype=torch.float64)}

    def round_models(points):
        it = iter(points)
        return [(1.0, {"w": torch.zeros(2, dtype=torch.float64) if i == bad else
                       torch.tensor(next(it), dtype=torch.float64)}) for i in range(4)]

    benign = [i for i in range(4) if i != bad]
    targets = []
    for r, points in enumerate([[(0, 0), (1, 0), (5, 0.1)], [(0, 0), (6, 0), (1, 0.1)],
                                [(7, 0), (0, 0), (1, 0.1)]]):
        ctx = ctx_for(4, fed, round_index=r)
        out = atk.poison_model(round_models(points), wg, ctx)
        targets.append(ctx.metrics["mimic_target"])
        assert torch.equal(out[bad][1]["w"], round_models(points)[targets[-1]][1]["w"])
    assert targets == [benign[2], benign[1], benign[1]]


# --- gaussian, sign_flipping, inf ----------------------------------------------------------------

@pytest.mark.parametrize("center", ["global", "mean"])
def test_gaussian_is_the_center_plus_one_shared_draw(center):
    n, m, std, seed = 6, 2, 0.3, 4
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES["wide"], seed=seed)
    ctx = ctx_for(n, fed, seed=seed)
    out, bad = poisoned(attack(fed, "gaussian", byzantine_client_num=m, gaussian_center=center,
                               gaussian_std=std), models, wg, ctx)
    rng = np.random.default_rng([seed, 0])
    rng.choice(n, size=m, replace=False)
    noise = np.concatenate([rng.standard_normal(s).reshape(-1) * std
                            for _, s in SHAPES["wide"]])
    base = flat(wg) if center == "global" else known_rows(models, bad, "full").mean(0)
    for i in bad:
        np.testing.assert_allclose(flat(out[i][1]), base + noise, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_sign_flipping_reverses_each_own_update(scale):
    n = 6
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES["small"], seed=2)
    ctx = ctx_for(n, fed)
    out, bad = poisoned(attack(fed, "sign_flipping", byzantine_client_num=3,
                               sign_flipping_scale=scale), models, wg, ctx)
    assert len(bad) == 3
    for i in bad:
        expected = flat(wg) - scale * (flat(models[i][1]) - flat(wg))
        np.testing.assert_allclose(flat(out[i][1]), expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("defense", [None, {"defense_type": "krum", "byzantine_client_num": 1},
                                     {"defense_type": "coordinate_wise_median"}])
def test_inf_updates_are_excluded_by_every_defense(defense):
    n = 7
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES["small"], seed=6, dtype=torch.float32)
    atk = attack(fed, "inf", byzantine_client_num=2)
    defender = (build_defense({"enable_defense": True, **defense}, fed) if defense
                else None)
    ctx = ctx_for(n, fed)
    new = aggregate_round(atk, defender, models, wg, ctx, fedavg)
    bad = ctx.metrics["malicious_clients"]
    assert len(bad) == 2 and set(bad) <= set(ctx.metrics["excluded_clients"])
    assert all("non-finite" in ctx.metrics["exclusion_reasons"][i] for i in bad)
    assert all(torch.isfinite(v).all() for v in new.values() if v.is_floating_point())
    benign = [models[i] for i in range(n) if i not in bad]
    clean = aggregate_round(None, defender, benign, wg, ctx_for(n - 2, fed), fedavg)
    np.testing.assert_allclose(flat(new), flat(clean), rtol=1e-6)


# --- the optimal variants -------------------------------------------------------------------------

def reference_line_search(objective, start=0.0, delta=10.0, ratio=0.8, evals=20) -> float:
    """ByzFL's Optimal_* search: expansion doubling delta while improving, then contraction."""
    best_x, best_y = start, objective(start)
    remaining = evals - 1
    while remaining > 0:
        remaining -= 1
        y = objective(best_x + delta)
        if y > best_y:
            best_x, best_y, delta = best_x + delta, y, delta * 2
        else:
            delta *= ratio
            break
    while remaining > 0:
        remaining -= 1
        y = objective(best_x + delta)
        if y > best_y:
            best_x, best_y = best_x + delta, y
        delta *= ratio
    return best_x


def trimmed_mean(X: np.ndarray, beta: float) -> np.ndarray:
    k = math.floor(beta * len(X))
    return np.sort(X, axis=0)[k:len(X) - k].mean(0)


@pytest.mark.parametrize("variant,defense", [
    ("alie", {"defense_type": "coordinate_wise_median"}),
    ("ipm", {"defense_type": "coordinate_wise_trimmed_mean", "beta": 0.2}),
    ("alie", {"defense_type": "coordinate_wise_trimmed_mean", "beta": 0.2}),
])
def test_optimal_factor_matches_byzfl_search_against_the_defense(variant, defense):
    n, m = 10, 3
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES["wide"], seed=8)
    atk = attack(fed, variant, byzantine_client_num=m, **{f"{variant}_optimal": True})
    ctx = ctx_for(n, fed, seed=2)
    new = aggregate_round(atk, build_defense(
        {"enable_defense": True, **defense}, fed), models, wg, ctx, fedavg)
    bad = ctx.metrics["malicious_clients"]
    B = known_rows(models, bad, "full")
    mu, w = B.mean(0), flat(wg)

    def crafted(factor):
        return mu - factor * B.std(0) if variant == "alie" else w - factor * (mu - w)

    def aggregate(X):
        return np.median(X, 0) if defense["defense_type"].endswith("median") \
            else trimmed_mean(X, 0.2)

    def objective(factor):
        return np.linalg.norm(aggregate(np.vstack([B] + [crafted(factor)] * m)) - mu)

    factor = reference_line_search(objective)
    key = "alie_z" if variant == "alie" else "ipm_epsilon"
    assert ctx.metrics[key] == pytest.approx(factor, rel=1e-12)
    assert factor > 0, "the search moved nowhere: the case tests nothing"
    np.testing.assert_allclose(flat(new), aggregate(np.vstack([B] + [crafted(factor)] * m)),
                               rtol=1e-9, atol=1e-12)


def test_optimal_search_leaves_the_round_and_the_defense_state_as_they_were():
    """The line search aggregates 20 trial rounds with the stateful FoolsGold: the round's
    result, metrics and FoolsGold's histories equal those of a round where ALIE sends the
    found z directly."""
    n = 8
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES["small"], seed=9, dtype=torch.float32)

    def one_round(**alie):
        defense = build_defense({"enable_defense": True, "defense_type": "foolsgold"}, fed)
        ctx = ctx_for(n, fed, seed=3)
        new = aggregate_round(attack(fed, "alie", byzantine_client_num=2, **alie),
                              defense, models, wg, ctx, fedavg)
        return new, ctx.metrics, defense.state_dict()

    new, metrics, state = one_round(alie_optimal=True)
    again, metrics_again, state_again = one_round(z=metrics["alie_z"])
    assert all(torch.equal(new[k], again[k]) for k in new)
    drop = {"aggregation_time_s"}
    assert {k: v for k, v in metrics.items() if k not in drop} == \
        {k: v for k, v in metrics_again.items() if k not in drop}
    assert repr(state) == repr(state_again)


def test_optimal_without_defense_takes_every_step():
    """Against FedAvg's mean (equal weights) the distance grows with the factor: the expansion
    never stops, so the factor is 10 (2^19 - 1) after 20 evaluations."""
    n = 6
    fed = Federation(n, n)
    models, wg = cloud(n, SHAPES["small"], seed=1, equal_counts=True)
    ctx = ctx_for(n, fed)
    aggregate_round(attack(fed, "ipm", byzantine_client_num=2, ipm_optimal=True),
                    None, models, wg, ctx, fedavg)
    assert ctx.metrics["ipm_epsilon"] == 10.0 * (2 ** 19 - 1)
