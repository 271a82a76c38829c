"""Min-Max and Min-Sum (Shejwalkar & Houmansadr 2021, "Manipulating the Byzantine: optimizing
model poisoning attacks and defenses for federated learning", NDSS), the AGR-agnostic attacks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ...aggregation import solvers
from ..base import ClientModel, RoundContext, Stage, StateDict
from ..registry import register_attack
from ._common import (BenignInformedAttack, KnowledgeParams, benign_stats, doc, replace_malicious,
                      split_round, update_gram)

PERTURBATIONS = ("unit_vec", "std", "sign")


def halving_search(acceptable: Callable[[float], bool], gamma_init: float, tau: float) -> float:
    """Shejwalkar & Houmansadr's Algorithm 1 (as their code runs it): from gamma = gamma_init
    with step = gamma_init, move gamma up by step / 2 after an acceptable gamma and down by
    step / 2 after a rejected one, halving the step, until gamma is within tau of the last
    acceptable one; returns that last acceptable gamma (0 when none was)."""
    gamma, step, success = gamma_init, gamma_init, 0.0
    while abs(success - gamma) > tau:
        if acceptable(gamma):
            success = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return success


@dataclass
class _Geometry:
    """The squared distances ||mu - gamma p - y_i||^2 = A_i - 2 gamma B_i + gamma^2 C of the
    malicious update to the k known updates y_i, and the known updates' pairwise squared
    distances D, all from one Gram matrix of the known updates and p."""

    A: np.ndarray
    B: np.ndarray
    C: float
    D: np.ndarray

    def distances(self, gamma: float) -> np.ndarray:
        return self.A - 2 * gamma * self.B + gamma * gamma * self.C


def geometry(G: np.ndarray, k: int, p_in_span: bool) -> tuple[_Geometry, float]:
    """From the Gram matrix G of the rows [y_1 .. y_k] (plus p as row k when p is not in their
    span), every vector written as coefficients a over the rows (v = R^T a, so <u, v> =
    a_u^T G a_v): mu = mean of the y_i, p = mu / ||mu|| when ``p_in_span`` (the unit vector),
    else row k. Returns the geometry and ||mu||."""
    rows = len(G)
    a_mu = np.zeros(rows)
    a_mu[:k] = 1.0 / k
    mu_norm = math.sqrt(max(float(a_mu @ G @ a_mu), 0.0))
    if p_in_span:
        a_p = a_mu / mu_norm if mu_norm > 0 else np.zeros(rows)
    else:
        a_p = np.zeros(rows)
        a_p[k] = 1.0
    diff = a_mu[None, :] - np.eye(rows)[:k]          # row i: mu - y_i
    A = np.einsum("ir,rs,is->i", diff, G, diff)
    B = diff @ G @ a_p
    C = float(a_p @ G @ a_p)
    return _Geometry(A, B, C, solvers.squared_distances(G[:k, :k])), mu_norm


class _AgrAgnosticAttack(BenignInformedAttack):
    """Shejwalkar & Houmansadr's AGR-agnostic attacks (Sec. IV-C and Algorithm 1): every
    malicious client sends

        w = w_g + mu - gamma * p,

    mu the mean of the known honest updates y_i = w_i - w_g, p the perturbation
    (``perturbation``: unit_vec = mu / ||mu||, std = the coordinate-wise standard deviation of
    the y_i (ddof 1, as the authors' code), sign = sign(mu)) and gamma the largest the paper's
    halving search (``gamma_init``, ``gamma_tau``; ``halving_search``) finds for which the
    malicious update stays inside the benign cloud by ``acceptable``. Every distance of the
    search comes from one Gram matrix of the known updates and p (fedsec's core); no pass over
    the model per gamma. Known updates: the benign clients' (full knowledge) or the attackers'
    own honest ones (``attacker_knowledge: partial``, the paper's partial knowledge).
    """

    stages = frozenset({Stage.MODEL_POISONING})
    knowledge = "full or partial (attacker_knowledge)"

    @dataclass
    class Params(KnowledgeParams):
        perturbation: str = doc("unit_vec", "p: unit_vec (mu / ||mu||) | std (coordinate-wise "
                                            "std of the known updates) | sign (sign(mu))",
                                choices=PERTURBATIONS)
        gamma_init: float = doc(10.0, "the search's first gamma (and first step)", gt=0)
        gamma_tau: float = doc(1e-5, "the search stops when gamma moves by at most this", gt=0)


    @staticmethod
    def acceptable(distances: np.ndarray, D: np.ndarray) -> bool:
        """Whether the malicious update's squared distances to the known updates fit the
        benign cloud's pairwise squared distances D."""
        raise NotImplementedError

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        bad, known = split_round(self, models, ctx)
        if not bad:
            return models
        p = self.params
        k = len(known)
        stats = {key: benign_stats(models, known, key, ddof=1)
                 for key, value in global_model.items() if value.is_floating_point()}
        g64 = {key: global_model[key].detach().to(torch.float64) for key in stats}
        if p.perturbation == "unit_vec":
            direction = None
        elif p.perturbation == "std":
            direction = {key: std for key, (_, std) in stats.items()}
        else:
            direction = {key: torch.sign(mean - g64[key]) for key, (mean, _) in stats.items()}
        rows = [models[i][1] for i in known]
        if direction is not None:
            rows.append({key: (g64[key] + direction[key]).to(value.dtype) if key in direction
                         else value for key, value in global_model.items()})
        geo, mu_norm = geometry(update_gram(self.name, rows, global_model), k,
                                direction is None)
        gamma = halving_search(lambda g: self.acceptable(geo.distances(g), geo.D),
                               p.gamma_init, p.gamma_tau)
        ctx.metrics[f"{self.name}_gamma"] = gamma

        def crafted(key: str, value: torch.Tensor) -> torch.Tensor:
            mean = stats[key][0]
            step = ((mean - g64[key]) / mu_norm if mu_norm > 0 else torch.zeros_like(mean)) \
                if direction is None else direction[key]
            return (mean - gamma * step).to(dtype=value.dtype, device=value.device)

        return replace_malicious(models, bad, crafted)


@register_attack("min_max", "minmax")
class MinMaxAttack(_AgrAgnosticAttack):
    __doc__ = _AgrAgnosticAttack.__doc__ + """
    Min-Max: the malicious update's largest distance to a known update is at most the largest
    distance between two known updates, max_i ||w - y_i|| <= max_ij ||y_i - y_j||.
    Reports ``ctx.metrics["malicious_clients"]`` and ``ctx.metrics["min_max_gamma"]``.
    """

    @staticmethod
    def acceptable(distances: np.ndarray, D: np.ndarray) -> bool:
        return bool(distances.max() <= D.max())


@register_attack("min_sum", "minsum")
class MinSumAttack(_AgrAgnosticAttack):
    __doc__ = _AgrAgnosticAttack.__doc__ + """
    Min-Sum: the malicious update's sum of squared distances to the known updates is at most
    the largest such sum of a known update, sum_i ||w - y_i||^2 <= max_i sum_j ||y_i - y_j||^2
    (the paper's bound; the authors' code takes the smallest sum instead).
    Reports ``ctx.metrics["malicious_clients"]`` and ``ctx.metrics["min_sum_gamma"]``.
    """

    @staticmethod
    def acceptable(distances: np.ndarray, D: np.ndarray) -> bool:
        return bool(distances.sum() <= D.sum(axis=1).max())
