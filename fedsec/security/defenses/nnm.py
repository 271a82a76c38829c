"""Nearest-neighbour mixing before the aggregation (``nnm``)."""
from __future__ import annotations

from dataclasses import dataclass

import fedsec

from ..base import Federation, RoundContext, StateDict
from ..registry import register_defense
from ._common import check_byzantine, doc
from ._pre_aggregation import PreAggregationDefense


@register_defense("nnm", "nearest_neighbor_mixing")
class NNMDefense(PreAggregationDefense):
    """Nearest-neighbour mixing (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan,
    AISTATS 2023, "Fixing by mixing: a recipe for optimal Byzantine ML under heterogeneity").

    Before the aggregation, each local model is replaced by the mean of its n - f nearest
    models, itself included (f = ``byzantine_client_num``): ``fedsec.pre.NNM(f)``. The paper
    puts it in front of a robust rule (``defense_type: [nnm, krum]``, ``[nnm, median]``), which
    then meets updates whose spread the mixing shrinks, heterogeneous honest ones included.
    Requires n - f >= 1. ``pre_aggregator(global_model, ctx)`` gives the fedsec.pre object.
    """

    @dataclass
    class Params:
        byzantine_client_num: int = doc(1, "f, the Byzantine clients tolerated; each model "
                                           "averages its n - f nearest", ge=0)

    @classmethod
    def validate(cls, params: "NNMDefense.Params", federation: Federation) -> None:
        check_byzantine("byzantine_client_num", params.byzantine_client_num, federation,
                        "NNM needs client_num_per_round - f >= 1", lambda n, f: n - f >= 1)

    def pre_aggregator(self, global_model: StateDict, ctx: RoundContext):
        return fedsec.pre.NNM(self.params.byzantine_client_num)
