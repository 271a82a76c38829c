"""Data poisoning in a Flower ClientApp: a malicious client's training data goes through a fedsec
attack's ``poison_data`` (label flipping, the model-replacement backdoor's trigger) before it
trains, as in fedsec's own simulation (FedMLSecurity, Han et al.: the attacker's data-poisoning
stage).

The client's id is its partition id, ``context.node_config["partition-id"]`` (0 ..
num_nodes - 1; set by Flower's simulation engine, and by ``flower-supernode --node-config
'partition-id=... num-partitions=...'`` in a deployment): the attacks choose their malicious
clients among these ids, stably across rounds.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Context

from ...security import Federation, RoundContext, Stage, build_attack, is_malicious

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"


class DataPoisoner:
    """The data-poisoning half of an attack, for the ClientApp's ``train`` function.

    ``attack_args`` is a fedsec YAML's ``attack_args`` section (e.g. ``{"enable_attack": True,
    "attack_type": "label_flipping", "original_class_list": [3], "target_class_list": [9],
    "poisoned_client_num": 1}``), checked against a federation of ``num_nodes`` nodes with
    ``nodes_per_round`` (default all) training each round. A disabled section poisons nothing.
    ``seed`` seeds each poisoning's ``RoundContext.rng`` with (seed, round, client).
    """

    def __init__(self, attack_args: Mapping | None, *, num_nodes: int,
                 nodes_per_round: int | None = None, seed: int = 0) -> None:
        self.federation = Federation(client_num_in_total=num_nodes,
                                     client_num_per_round=num_nodes if nodes_per_round is None
                                     else nodes_per_round)
        attack = build_attack(attack_args, self.federation)
        if attack is not None and Stage.DATA_POISONING not in attack.stages:
            raise ValueError(f"attack_type {attack.name!r} does not poison training data; a "
                             f"model-poisoning attack runs on the server (FedSecStrategy's "
                             f"attack_args)")
        self.attack = attack
        self.seed = seed

    def is_malicious(self, context: Context, server_round: int) -> bool:
        """Whether this client poisons its data in round ``server_round`` (1, 2, ...)."""
        client = self.client_id(context)
        return is_malicious(self.attack, client, self._context(client, server_round))

    def poison(self, features: torch.Tensor, labels: torch.Tensor, context: Context,
               server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, labels)`` as this client trains on them in round ``server_round``: the
        attack's poisoned copy for a malicious client, the same tensors for a benign one."""
        client = self.client_id(context)
        ctx = self._context(client, server_round)
        if not is_malicious(self.attack, client, ctx):
            return features, labels
        return self.attack.poison_data(features, labels, client, ctx)

    def client_id(self, context: Context) -> int:
        """The client's partition id, checked against the federation's size."""
        config = context.node_config
        if PARTITION_ID not in config:
            raise ValueError(f"the node has no {PARTITION_ID!r} in context.node_config (Flower's "
                             f"simulation sets it; a SuperNode gets it from --node-config); "
                             f"DataPoisoner needs it as the client's id")
        client = config[PARTITION_ID]
        total = self.federation.client_num_in_total
        if isinstance(client, bool) or not isinstance(client, int) or not 0 <= client < total:
            raise ValueError(f"{PARTITION_ID}={client!r} must be an integer between 0 and "
                             f"num_nodes - 1 = {total - 1}")
        if NUM_PARTITIONS in config and config[NUM_PARTITIONS] != total:
            raise ValueError(f"the node says {NUM_PARTITIONS}={config[NUM_PARTITIONS]!r} but "
                             f"DataPoisoner was built for num_nodes={total}")
        return client

    def _context(self, client: int, server_round: int) -> RoundContext:
        if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 1:
            raise ValueError(f"server_round must be an integer >= 1 (Flower's "
                             f"config['server-round']); got {server_round!r}")
        round_index = server_round - 1
        # A node does not know which others the server sampled this round, so the round's
        # clients are the whole federation: an attack that draws its attacker among them
        # (model replacement) then picks the same node on every node, not each node itself.
        # With nodes_per_round < num_nodes that node may sit the round out, which then goes
        # unattacked.
        everyone = list(range(self.federation.client_num_in_total))
        return RoundContext(round_index=round_index, client_ids=everyone,
                            rng=np.random.default_rng([self.seed, round_index, client]))


__all__ = ["DataPoisoner"]
