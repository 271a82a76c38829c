"""Helpers shared by the built-in attacks.

- ``doc(default, text)``: a ``Params`` field with its documentation in ``metadata["doc"]``.
- ``choose_malicious(ctx, n, count, selection, setting)``: positions of this round's malicious
  clients, drawn from ``ctx.rng`` (seeded from the experiment's seed and the round:
  reproducible, new each round), or the round's clients among a fixed set (``malicious_selection: fixed``).
- ``benign_stats``: per-coordinate mean and std (float64) of the benign clients' models.
- ``seeded_rng``: a generator seeded from an attack's own seed and some integers, for choices
  that must be the same whenever they are asked for (e.g. ``is_malicious`` across rounds).
- ``CountParams`` / ``KnowledgeParams``: the schedule keys plus ``byzantine_client_num`` (and
  ``attacker_knowledge``), declared once for the model-poisoning attacks.
- ``fixed_clients`` / ``malicious_ids``: the malicious client ids over the whole federation,
  fixed or drawn anew each round (``malicious_selection``), for attacks chosen per client.
- ``split_round``: a model-poisoning round's malicious positions (reported) and the positions
  whose honest models the attackers know.
- ``update_gram``: the Gram matrix of the updates w_i - w_g from fedsec's core (one streaming
  pass), from which the optimised attacks take every distance and inner product they search on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ...aggregation.context import AggregationContext
from ...aggregation.errors import NonFiniteUpdateError
from ..base import Attack, ClientModel, Federation, RoundContext, Setting, StateDict
from ..base import client_id, doc, is_float  # noqa: F401  (re-exported)
from ..fedavg import fedavg
from ..metrics import report_malicious
from ..schedule import AttackParams
from ..state import map_floats


def choose_malicious(ctx: RoundContext, n: int, count: int, selection: AttackParams,
                     setting: Setting, what: str = "byzantine_client_num") -> list[int]:
    """This round's malicious positions in ``range(n)``, ascending: with
    ``malicious_selection: fixed`` the positions of the round's clients among
    ``fixed_clients``; else ``count`` distinct positions drawn from ``ctx.rng``."""
    if selection.malicious_selection == "fixed":
        ids = fixed_clients(selection.seed, client_total(setting), count)
        return [i for i in range(n) if client_id(ctx, i) in ids]
    if count > n:
        raise ValueError(f"{what}={count} malicious clients, but round {ctx.round_index} has only "
                         f"{n} clients")
    if count <= 0:
        return []
    return sorted(int(i) for i in ctx.rng.choice(n, size=count, replace=False))


def benign_stats(models: list[ClientModel], benign: list[int], key: str, ddof: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate mean and std (population std with ddof 0) of ``key`` over the benign
    models, in float64; the std of a single model is 0."""
    stacked = torch.stack([models[i][1][key].detach().to(torch.float64) for i in benign])
    return stacked.mean(0), stacked.std(0, correction=min(ddof, len(benign) - 1))


def seeded_rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(int(p) & 0xFFFFFFFF for p in parts)])


def check_count(key: str, value: int, federation, *, leave_benign: int = 0) -> None:
    """``0 <= value <= client_num_per_round - leave_benign``."""
    high = federation.client_num_per_round - leave_benign
    if value < 0 or value > high:
        extra = f" - {leave_benign} (at least {leave_benign} benign)" if leave_benign else ""
        raise ValueError(f"{key}={value} is out of range: must be between 0 and "
                         f"client_num_per_round{extra} = {high}")


def replace_malicious(models: list[ClientModel], bad: list[int],
                      poisoned: Callable[[str, torch.Tensor], torch.Tensor]) -> list[ClientModel]:
    """``models`` with every client at a position in ``bad`` sending the same crafted model:
    ``poisoned(key, value)`` is computed once per key and each such client gets its own copy."""
    cache: dict[str, torch.Tensor] = {}

    def copy_of(key: str, value: torch.Tensor) -> torch.Tensor:
        if key not in cache:
            cache[key] = poisoned(key, value)
        return cache[key].clone()

    out = list(models)
    for i in bad:
        out[i] = (models[i][0], map_floats(models[i][1], copy_of))
    return out


# --- who attacks, and what they know -------------------------------------------------------------

KNOWLEDGE = ("full", "partial")


@dataclass
class CountParams(AttackParams):
    """The schedule keys and the number of malicious clients of a model-poisoning attack."""

    byzantine_client_num: int = doc(1, "malicious clients per round (with malicious_selection "
                                       "fixed: in the federation)", ge=0)


@dataclass
class KnowledgeParams(CountParams):
    """... and what the attackers see (Fang et al. 2020; Shejwalkar & Houmansadr 2021)."""

    attacker_knowledge: str = doc("full", "benign updates the attackers see: full (every benign "
                                          "client's of the round) | partial (only the malicious "
                                          "clients' own honest updates)", choices=KNOWLEDGE)



class BenignInformedAttack(Attack):
    """An attack whose malicious update is crafted from benign ones (the round's, or the
    attackers' own honest updates): at least one client of a round must stay benign."""

    @classmethod
    def validate(cls, params: Any, federation: Federation) -> None:
        check_count("byzantine_client_num", params.byzantine_client_num, federation,
                    leave_benign=1)


def client_total(setting: Setting) -> int:
    """The federation's client count, which a fixed malicious set is drawn from."""
    if setting.federation is None:
        raise ValueError("malicious_selection=fixed draws its clients among client_num_in_total, "
                         "but this attack was given no federation (setting.federation is None)")
    return setting.federation.client_num_in_total


def fixed_clients(seed: int, total: int, count: int) -> frozenset[int]:
    """``count`` ids of ``range(total)``, the same for a seed in every round."""
    return frozenset(int(c) for c in seeded_rng(seed).permutation(total)[:count])


def malicious_ids(selection: AttackParams, round_index: int, count: int, total: int
                  ) -> frozenset[int]:
    """``count`` ids of ``range(total)``: ``fixed_clients``, or with per_round a set drawn from
    (seed, round), the same whenever it is asked for within a round (``is_malicious`` is asked
    client by client)."""
    if selection.malicious_selection == "fixed":
        return fixed_clients(selection.seed, total, count)
    order = seeded_rng(selection.seed, round_index).permutation(total)
    return frozenset(int(c) for c in order[:count])


def split_round(attack: Attack, models: list[ClientModel], ctx: RoundContext,
                *, leave_benign: bool = True) -> tuple[list[int], list[int]]:
    """(bad, known): the round's malicious positions, reported in ``ctx.metrics``, and the
    positions whose honest models the attackers see: the benign ones (full knowledge) or
    their own (``attacker_knowledge: partial``). ``attack.params`` is a ``CountParams``."""
    name, params, n = attack.name, attack.params, len(models)
    bad = choose_malicious(ctx, n, params.byzantine_client_num, params, attack.setting)
    if leave_benign and bad and len(bad) == n:
        raise ValueError(f"{name}: byzantine_client_num={params.byzantine_client_num} leaves no "
                         f"benign client among the round's {n}")
    report_malicious(ctx, [client_id(ctx, i) for i in bad])
    partial = isinstance(params, KnowledgeParams) and params.attacker_knowledge == "partial"
    known = list(bad) if partial else [i for i in range(n) if i not in bad]
    return bad, known


def update_gram(name: str, states: list[StateDict], global_model: StateDict) -> np.ndarray:
    """G_ij = <w_i - w_g, w_j - w_g> over the floating entries, in float64, from the core's
    streaming Gram pass (each model read once, no stacked copy): every distance and inner
    product of the optimised attacks comes from it."""
    core = AggregationContext(name, states, "raise", "auto")
    try:
        gram = core.gram(core.center(global_model))
    except NonFiniteUpdateError as exc:
        raise ValueError(f"{name}: the honest models the attackers compute on hold NaN or Inf "
                         f"(positions {exc.clients} of the {len(states)} they know)") from None
    return np.ldexp(gram.matrix, -2 * gram.exponent)


# --- the optimal variants' line search (ByzFL) ----------------------------------------------------

@dataclass
class LineSearchParams:
    """ByzFL's line search of an attack factor (its defaults)."""

    optimal_evals: int = doc(20, "optimal variant: evaluations of the defended aggregate", ge=1)
    optimal_start: float = doc(0.0, "optimal variant: the first factor tried")
    optimal_delta: float = doc(10.0, "optimal variant: the first step of the search", gt=0)
    optimal_ratio: float = doc(0.8, "optimal variant: the step's contraction", gt=0.5, lt=1)


def line_search(objective: Callable[[float], float], search: LineSearchParams) -> float:
    """ByzFL's search (``Optimal_ALittleIsEnough``, ``Optimal_InnerProductManipulation``):
    from x = start, expansion takes steps x + delta, doubling delta while the objective grows;
    at the first step that does not, delta shrinks by ratio and contraction tries x + delta,
    keeping x + delta when it is better and shrinking delta by ratio every time, until
    ``optimal_evals`` evaluations in all. Returns the best x."""
    best_x, delta = search.optimal_start, search.optimal_delta
    best_y = objective(best_x)
    remaining = search.optimal_evals - 1
    while remaining > 0:
        remaining -= 1
        y = objective(best_x + delta)
        if y <= best_y:
            delta *= search.optimal_ratio
            break
        best_x, best_y = best_x + delta, y
        delta *= 2
    while remaining > 0:
        remaining -= 1
        y = objective(best_x + delta)
        if y > best_y:
            best_x, best_y = best_x + delta, y
        delta *= search.optimal_ratio
    return best_x


def defended_deviation(params: KnowledgeParams, models: list[ClientModel], bad: list[int],
                       known: list[int], global_model: StateDict, ctx: RoundContext,
                       benign_mean: dict[str, torch.Tensor],
                       crafted: Callable[[float], Callable[[str, torch.Tensor], torch.Tensor]]
                       ) -> Callable[[float], float]:
    """factor -> ||aggregate - benign mean||: how far the defense in use (``ctx.aggregate``,
    handed over by the pipeline) moves from the known models' mean when the malicious clients
    send ``crafted(factor)``. The aggregate is of the round as the server sees it (full
    knowledge), or of the attackers' own honest and crafted models (partial: all they know).
    Without ``ctx.aggregate`` (a hook called outside the pipeline) it is FedAvg's mean, the
    pipeline's aggregation when no defense runs."""

    def aggregate(trial: list[ClientModel], ids: list[int]) -> StateDict:
        if ctx.aggregate is not None:
            return ctx.aggregate(trial, ids)
        return fedavg(trial, global_model, RoundContext(ctx.round_index, ids, ctx.rng))

    def deviation(factor: float) -> float:
        poisoned = replace_malicious(models, bad, crafted(factor))
        if params.attacker_knowledge == "partial":
            trial = [models[i] for i in known] + [poisoned[i] for i in bad]
            ids = [client_id(ctx, i) for i in known + bad]
        else:
            trial, ids = poisoned, [client_id(ctx, i) for i in range(len(models))]
        out = aggregate(trial, ids)
        return math.sqrt(sum(float(((out[k].detach().to(torch.float64) - mean) ** 2).sum())
                             for k, mean in benign_mean.items()))

    return deviation
