"""A little is enough (Baruch et al. 2019, "A little is enough: circumventing defenses for
distributed learning", NeurIPS), FedML's ``alie``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from ..base import ClientModel, Federation, RoundContext, Stage, StateDict
from ..registry import register_attack
from ._common import (BenignInformedAttack, KnowledgeParams, LineSearchParams, benign_stats,
                      defended_deviation, doc, line_search, replace_malicious, split_round)


def alie_z_max(n: int, m: int) -> float:
    """z_max = Phi^-1((n - s) / n), s = floor(n / 2 + 1) - m (Baruch et al. 2019, Alg. 3):
    the largest shift that still leaves s benign clients farther from the mean than the
    attackers, so the attackers gain a majority."""
    s = math.floor(n / 2 + 1) - m
    if not 0 < s < n:
        raise ValueError(f"alie: z_max needs 0 < s < n with s = floor(n/2 + 1) - m; got n={n}, "
                         f"m={m}, s={s} (set z explicitly or use fewer malicious clients)")
    return NormalDist().inv_cdf((n - s) / n)


@register_attack("alie", "a_little_is_enough")
class ALIEAttack(BenignInformedAttack):
    """ALIE (Baruch et al. 2019): each malicious client sends, per coordinate,

        w = mu - z * sigma,

    mu and sigma the mean and population std (ddof 0) of the honest models the attackers see
    (``attacker_knowledge``: the round's benign ones, or their own; float64, unweighted), z =
    ``z`` or z_max = Phi^-1((n - s) / n), s = floor(n / 2 + 1) - m, n the round's clients and
    m its malicious ones. (Shifting models or updates is the same: mu and sigma are
    translation-equivariant.)

    ``alie_optimal: true`` is ByzFL's ``Optimal_ALittleIsEnough``: z is found by ByzFL's line
    search (``line_search``; ``optimal_*`` keys) maximising ||aggregate - mu||, the distance of
    what the defense in use aggregates from the known models' mean (the pipeline hands the
    attack the experiment's before- and on-aggregation defenses as ``ctx.aggregate``). With
    no defense the aggregate is FedAvg's mean, whose distance grows with z without bound: the
    search then takes every step it is given, z = start + delta (2^(evals - 1) - 1). (ByzFL
    writes mu + tau sigma; the search here runs on z of mu - z sigma, fedsec's sign.)

    Reports ``ctx.metrics["malicious_clients"]`` and ``ctx.metrics["alie_z"]``.
    """

    stages = frozenset({Stage.MODEL_POISONING})
    knowledge = "full or partial (attacker_knowledge)"

    @dataclass
    class Params(KnowledgeParams, LineSearchParams):
        z: float | None = doc(None, "the shift in standard deviations; default z_max of the "
                                    "paper")
        alie_optimal: bool = doc(False, "find z by ByzFL's line search against the defense in "
                                        "use (replaces z)")

    @classmethod
    def validate(cls, params: "ALIEAttack.Params", federation: Federation) -> None:
        super().validate(params, federation)
        if params.alie_optimal and params.z is not None:
            raise ValueError(f"z={params.z!r} is set, but alie_optimal=true searches z; drop "
                             f"one of them")
        if params.z is None and not params.alie_optimal and params.byzantine_client_num > 0:
            try:
                alie_z_max(federation.client_num_per_round, params.byzantine_client_num)
            except ValueError as exc:
                raise ValueError(f"byzantine_client_num={params.byzantine_client_num}: {exc}") \
                    from exc

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        bad, known = split_round(self, models, ctx)
        if not bad:
            return models
        stats = {k: benign_stats(models, known, k) for k, v in global_model.items()
                 if v.is_floating_point()}

        def shifted(z: float):
            return lambda k, v: (stats[k][0] - z * stats[k][1]).to(dtype=v.dtype,
                                                                  device=v.device)

        p = self.params
        if p.alie_optimal:
            deviation = defended_deviation(p, models, bad, known, global_model, ctx,
                                           {k: mean for k, (mean, _) in stats.items()}, shifted)
            z = line_search(deviation, p)
        else:
            z = p.z if p.z is not None else alie_z_max(len(models), len(bad))
        ctx.metrics["alie_z"] = z
        return replace_malicious(models, bad, shifted(z))
