"""MoNNA (Farhadkhani et al. 2023): the mean of a trusted client's nearest neighbours."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import Federation
from ..registry import register_defense
from ._common import doc
from ._rule_defense import ByzantineParams, RuleDefense, check_majority


@register_defense("monna")
class MoNNADefense(RuleDefense):
    """MoNNA (Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan, ICML 2023, "Robust
    collaborative learning with linear gradient overhead"): the new global model is the mean,
    weighted by sample counts, of the n - f local models nearest to that of the trusted client,
    its own included (``fedsec.monna``). ``monna_trusted_client`` names it by id; it must then
    take part in every round (the config requires client_num_per_round = client_num_in_total),
    and a round whose models no longer hold it (a filter before it in a chain dropped it) is an
    error. Left unset, the round's first client is trusted. Requires n > 2f
    (f = ``byzantine_client_num``); the others are reported in excluded_clients."""

    @dataclass
    class Params(ByzantineParams):
        monna_trusted_client: int | None = doc(None, "id of the client whose model is "
                                                  "trusted (below client_num_in_total); unset: "
                                                  "the round's first client", ge=0)

    @classmethod
    def validate(cls, params: "MoNNADefense.Params", federation: Federation) -> None:
        check_majority("MoNNA", params, federation)
        if params.monna_trusted_client is None:
            return
        if params.monna_trusted_client >= federation.client_num_in_total:
            raise ValueError(f"monna_trusted_client={params.monna_trusted_client} must be a "
                             f"client id below client_num_in_total="
                             f"{federation.client_num_in_total}")
        if federation.client_num_per_round != federation.client_num_in_total:
            raise ValueError(f"monna needs its trusted client in every round: "
                             f"client_num_per_round={federation.client_num_per_round} must "
                             f"equal client_num_in_total={federation.client_num_in_total}")

    def aggregate(self, models, weights, global_model, ctx, pre):
        trusted = self.params.monna_trusted_client
        if trusted is not None and trusted not in ctx.client_ids:
            raise ValueError(f"monna: round {ctx.round_index} holds no model of the trusted "
                             f"client {trusted} (its clients: {list(ctx.client_ids)})")
        position = 0 if trusted is None else list(ctx.client_ids).index(trusted)
        return fedsec.monna(models, self.params.byzantine_client_num, position, weights=weights,
                            return_info=True)
