"""A little is enough (Baruch et al. 2019, "A little is enough: circumventing defenses for
distributed learning", NeurIPS), FedML's ``alie``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from ..base import Attack, ClientModel, Federation, RoundContext, Stage, StateDict
from ..registry import register_attack
from ._common import (benign_stats, check_count, choose_malicious, client_id, doc,
                      replace_malicious, report_malicious)


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
class AlieAttack(Attack):
    """ALIE (Baruch et al. 2019): each malicious client sends, per coordinate,

        w = mu - z * sigma,

    mu and sigma the mean and population std (ddof 0) of the round's benign models (the
    attacker is assumed to know them; computed in float64, unweighted), z = ``z`` or
    z_max = Phi^-1((n - s) / n), s = floor(n / 2 + 1) - m, n the round's clients and m =
    ``byzantine_client_num`` malicious ones drawn from ``ctx.rng``. (Shifting models or
    updates is the same: mu and sigma are translation-equivariant.) Reports
    ``ctx.metrics["malicious_clients"]`` and ``ctx.metrics["alie_z"]``.
    """

    stages = frozenset({Stage.MODEL_POISONING})

    @dataclass
    class Params:
        byzantine_client_num: int = doc(1, "malicious clients per round; at least one client "
                                           "stays benign")
        z: float | None = doc(None, "the shift in standard deviations; default z_max of the "
                                    "paper")

    @classmethod
    def validate(cls, params: "AlieAttack.Params", federation: Federation) -> None:
        check_count("byzantine_client_num", params.byzantine_client_num, federation,
                    leave_benign=1)
        if params.z is not None and not math.isfinite(params.z):
            raise ValueError(f"z={params.z!r} must be a finite number")
        if params.z is None and params.byzantine_client_num > 0:
            try:
                alie_z_max(federation.client_num_per_round, params.byzantine_client_num)
            except ValueError as exc:
                raise ValueError(f"byzantine_client_num={params.byzantine_client_num}: {exc}") \
                    from exc

    def poison_model(self, models: list[ClientModel], global_model: StateDict,
                     ctx: RoundContext) -> list[ClientModel]:
        n, m = len(models), self.params.byzantine_client_num
        if m >= n:
            raise ValueError(f"alie: byzantine_client_num={m} leaves no benign client among the "
                             f"round's {n}")
        bad = choose_malicious(ctx, n, m)
        report_malicious(ctx, [client_id(ctx, i) for i in bad])
        if not bad:
            return models
        z = self.params.z if self.params.z is not None else alie_z_max(n, m)
        ctx.metrics["alie_z"] = z
        benign = [i for i in range(n) if i not in bad]

        def shifted(k, v):
            mu, sigma = benign_stats(models, benign, k)
            return (mu - z * sigma).to(dtype=v.dtype, device=v.device)

        return replace_malicious(models, bad, shifted)
