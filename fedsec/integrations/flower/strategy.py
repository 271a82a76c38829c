"""A Flower strategy whose aggregation runs through fedsec's attacks and defenses.

``FedSecStrategy`` is Flower's Message-API ``FedAvg`` (``flwr.serverapp.strategy``): the same
sampling, messages, evaluation and options. Only ``aggregate_train`` changes: the replies
become fedsec's W_l (``(num-examples, state_dict)`` per client, the state_dict in the
ArrayRecord's key order, as ``ArrayRecord.to_torch_state_dict`` gives it) and go through
``fedsec.security.aggregate_round``, i.e. the model-poisoning attack, then the before-, on- and
after-aggregation defenses, with the native weighted mean as FedAvg's own aggregation.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from ...security import (Federation, RoundContext, Stage, aggregate_round,
                         build_attack, build_defense, fedavg)
from ...security.metrics import EXCLUDED_KEY
from .metrics import to_metric_values



class FedSecStrategy(FedAvg):
    """FedAvg with fedsec's attack and defense hooks in the server's aggregation.

    Parameters
    ----------
    num_nodes : int
        The federation's number of nodes (``num_supernodes`` of a simulation). Each round
        waits for all of them to connect, then FedAvg samples
        ``max(int(num_nodes * fraction_train), min_train_nodes)`` to train; the attack and
        defense parameters are checked against these two numbers (``client_num_in_total``,
        ``client_num_per_round``) when the strategy is built, with fedsec's config errors
        (e.g. "Krum needs client_num_per_round > 2f + 2"). More connected nodes than
        ``num_nodes`` is an error.
    defense_args, attack_args : mapping, optional
        The ``defense_args`` / ``attack_args`` sections of a fedsec YAML, e.g.
        ``{"enable_defense": True, "defense_type": "krum", "krum_param_m": 5,
        "byzantine_client_num": 1}``. The attack must poison models on the server
        (``byzantine``, ``alie``, ``ipm``, ``model_replacement``'s scaling); data poisoning
        runs in the ClientApp (``DataPoisoner``).
    seed : int
        Seeds each round's ``RoundContext.rng`` with ``(seed, server_round - 1)``, as fedsec's
        own simulation seeds round ``server_round - 1``.
    client_id_key : str or None
        The clients' id in fedsec's metrics. When every reply's MetricRecord has this key
        (default ``"partition-id"``, ``context.node_config["partition-id"]`` in a ClientApp),
        it is the client's id; otherwise, or with None, the id is Flower's node id
        (``msg.metadata.src_node_id``). Partition ids are stable and small (0 ..
        num_nodes - 1), which attacks that name clients need (``model_replacement``'s
        ``malicious_client_id``). The key is left out of the aggregated train metrics.
    **fedavg_options
        Passed to ``FedAvg`` (``fraction_train``, ``min_train_nodes``, ``weighted_by_key``,
        ...).

    Each round's ``MetricRecord`` (``Result.train_metrics_clientapp[server_round]``) holds
    the clients' metrics averaged over the clients the defense kept, and fedsec's:
    ``fedsec-clients`` (the round's client ids, ascending: replies are ordered by id, so a
    round does not depend on the order they arrive in), ``fedsec-excluded-clients`` (ids the
    defense or the non-finite check left out), ``fedsec-aggregation-time-s`` (seconds spent
    in the defense and the aggregation, as ``aggregate_round`` measures them),
    ``fedsec-malicious-clients`` when an attack ran, and the defense's own reports
    (``fedsec-krum-scores``, ...; see ``fedsec.integrations.flower.metrics``).
    ``round_metrics[server_round]`` keeps every entry, also those without a MetricRecord form
    (``exclusion_reasons``).
    """

    def __init__(self, *, num_nodes: int, defense_args: Mapping | None = None,
                 attack_args: Mapping | None = None, seed: int = 0,
                 client_id_key: str | None = "partition-id", **fedavg_options: Any) -> None:
        super().__init__(**fedavg_options)
        self.federation = Federation(client_num_in_total=num_nodes,
                                     client_num_per_round=self._nodes_per_round(num_nodes))
        attack = build_attack(attack_args, self.federation)
        if attack is not None and Stage.MODEL_POISONING not in attack.stages:
            raise ValueError(
                f"attack_type {attack.name!r} does not poison models on the server, so "
                f"FedSecStrategy cannot inject it; a data-poisoning attack runs in the ClientApp "
                f"(fedsec.integrations.flower.DataPoisoner)")
        self.attack = attack
        # built for the federation, which is all the strategy knows (no model: a component
        # that needs one refuses to run here)
        self.defense = build_defense(defense_args, self.federation)
        self.seed = seed
        self.client_id_key = client_id_key
        self.current_arrays: ArrayRecord | None = None
        self.round_metrics: dict[int, dict[str, Any]] = {}

    def _nodes_per_round(self, num_nodes: int) -> int:
        """FedAvg.configure_train's sample size for a federation of ``num_nodes``."""
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer; got {num_nodes!r}")
        per_round = max(int(num_nodes * self.fraction_train), self.min_train_nodes)
        if per_round > num_nodes:
            raise ValueError(f"min_train_nodes={self.min_train_nodes} is larger than "
                             f"num_nodes={num_nodes}")
        return per_round

    def summary(self) -> None:
        """Log the attack and defense, then FedAvg's summary."""
        attack, defense = self.attack, self.defense
        log(INFO, "\t├──> fedsec:")
        log(INFO, "\t│\t├── Attack: %s", attack.params if attack else "none")
        log(INFO, "\t│\t├── Defense: %s", defense.params if defense else "none")
        log(INFO, "\t│\t└── Checked for %d nodes, %d per round",
            self.federation.client_num_in_total, self.federation.client_num_per_round)
        super().summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """FedAvg's, once the whole federation is connected, keeping ``arrays``: the global
        model the defenses compare against."""
        self.current_arrays = arrays
        self._wait_for_federation(grid)
        return super().configure_train(server_round, arrays, config, grid)

    def _wait_for_federation(self, grid: Grid) -> None:
        """Wait for ``num_nodes`` nodes. FedAvg sizes a round's sample from the nodes connected
        when it is called (a simulation's nodes register while the first round starts), and the
        parameters were checked for the sample size of the whole federation."""
        expected = self.federation.client_num_in_total
        while (connected := len(list(grid.get_node_ids()))) < expected:
            log(INFO, "Waiting for nodes to connect: %d of num_nodes=%d", connected, expected)
            time.sleep(1)
        if connected > expected:
            raise ValueError(f"{connected} nodes are connected, but FedSecStrategy was built for "
                             f"num_nodes={expected} (its attack and defense parameters were "
                             f"checked for that federation)")

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The new global model from the valid replies, through the attack and defense hooks."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        if self.current_arrays is None:
            raise RuntimeError("aggregate_train before configure_train: FedSecStrategy needs the "
                               "round's global model, which configure_train receives")
        by_id = sorted(zip(self._client_ids(valid), (m.content for m in valid)),
                       key=lambda pair: pair[0])
        ids = [client for client, _ in by_id]
        models = [(float(_metric_record(content)[self.weighted_by_key]),
                   _array_record(content).to_torch_state_dict()) for _, content in by_id]
        ctx = RoundContext(round_index=server_round - 1, client_ids=list(ids),
                           rng=np.random.default_rng([self.seed, server_round - 1]))
        new_global = aggregate_round(self.attack, self.defense, models,
                                     self.current_arrays.to_torch_state_dict(), ctx, fedavg)
        ctx.metrics.setdefault(EXCLUDED_KEY, [])
        self.round_metrics[server_round] = ctx.metrics

        excluded = set(ctx.metrics[EXCLUDED_KEY])
        kept = [content for client, content in by_id if client not in excluded]
        metrics = self.train_metrics_aggr_fn(kept, self.weighted_by_key)
        if self.client_id_key is not None:
            metrics.pop(self.client_id_key, None)
        metrics.update(to_metric_values(ctx.metrics, ids))
        return ArrayRecord.from_torch_state_dict(new_global), metrics

    def _client_ids(self, replies: list[Message]) -> list[int]:
        """Each reply's client id: its ``client_id_key`` metric, else its node id. (Flower's
        reply check has made every MetricRecord hold the same keys.)"""
        records = [_metric_record(m.content) for m in replies]
        if self.client_id_key is not None and self.client_id_key in records[0]:
            ids = [_as_client_id(self.client_id_key, r[self.client_id_key]) for r in records]
        else:
            ids = [int(m.metadata.src_node_id) for m in replies]
        duplicates = sorted({c for c in ids if ids.count(c) > 1})
        if duplicates:
            raise ValueError(f"two replies of one round have the same client id {duplicates} "
                             f"(from {self.client_id_key or 'node id'!r}); each client needs "
                             f"its own")
        return ids


def _metric_record(content: RecordDict) -> MetricRecord:
    return next(iter(content.metric_records.values()))


def _array_record(content: RecordDict) -> ArrayRecord:
    return next(iter(content.array_records.values()))


def _as_client_id(key: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"metric {key!r} must be a client id (an integer >= 0); got {value!r}")
    return value


__all__ = ["FedSecStrategy"]
