"""Multi-Krum in a Flower simulation: 10 clients on fedsec's shipped digits, two of them malicious.

The clients train a logistic regression on an iid tenth of the 8,000 training digits (one local
epoch of SGD per round). Two are malicious: one flips every label (y -> 9 - y) in its ClientApp
through ``DataPoisoner``, and each round the strategy replaces one client's model by N(0, 1)
noise (``byzantine``). Multi-Krum (f = 2, m = 6) chooses the models FedAvg averages; the server
evaluates the global model on the 2,000 test digits after every round. Flower's own simulation
engine (Ray) runs the clients, two at a time on a 2-core machine.

    pip install "fedsec[flower]"
    python examples/flower_digits.py                   # multi-Krum
    python examples/flower_digits.py --defense none    # plain FedAvg, for comparison
    python examples/flower_digits.py --defense median  # coordinate-wise median
"""
from __future__ import annotations

import argparse

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedsec.data import load_dataset, partition
from fedsec.integrations.flower import DataPoisoner, FedSecStrategy
from fedsec.models import build_model

NUM_NODES = 10
BATCH_SIZE = 32
LEARNING_RATE = 0.1
DEFENSES = {
    "krum": {"enable_defense": True, "defense_type": "krum", "byzantine_client_num": 2,
             "krum_param_m": 6},
    "median": {"enable_defense": True, "defense_type": "coordinate_wise_median"},
    "none": None,
}
BYZANTINE = {"enable_attack": True, "attack_type": "byzantine", "attack_mode": "random",
             "byzantine_client_num": 1}
LABEL_FLIPPING = {"enable_attack": True, "attack_type": "label_flipping",
                  "original_class_list": list(range(10)),
                  "target_class_list": list(range(9, -1, -1)), "poisoned_client_num": 1}

poisoner = DataPoisoner(LABEL_FLIPPING, num_nodes=NUM_NODES)


def new_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lr", input_shape=(1, 28, 28), num_classes=10)


def client_data(partition_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("digits")
    mine = partition(data, NUM_NODES, "iid", seed=0)[partition_id]
    return data.train_x[mine], data.train_y[mine]


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One local epoch on the node's partition, poisoned first if the node is malicious."""
    partition_id = context.node_config["partition-id"]
    server_round = msg.content["config"]["server-round"]
    features, labels = poisoner.poison(*client_data(partition_id), context, server_round)
    model = new_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(server_round))
    total = 0.0
    for start in range(0, len(labels), BATCH_SIZE):
        batch = order[start:start + BATCH_SIZE]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(features[batch]), labels[batch])
        loss.backward()
        optimizer.step()
        total += float(loss) * len(batch)
    metrics = {"num-examples": len(labels), "partition-id": partition_id,
               "train_loss": total / len(labels)}
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                               "metrics": MetricRecord(metrics)}), reply_to=msg)


def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    data = load_dataset("digits")
    model = new_model()
    model.load_state_dict(arrays.to_torch_state_dict())
    with torch.no_grad():
        correct = (model(data.test_x).argmax(1) == data.test_y).float().mean()
    return MetricRecord({"accuracy": float(correct)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--defense", choices=sorted(DEFENSES), default="krum")
    options = parser.parse_args()

    server_app = ServerApp()
    results = {}

    @server_app.main()
    def server(grid: Grid, context: Context) -> None:
        strategy = FedSecStrategy(num_nodes=NUM_NODES, defense_args=DEFENSES[options.defense],
                                  attack_args=BYZANTINE, fraction_evaluate=0.0)
        results["result"] = strategy.start(
            grid=grid, initial_arrays=ArrayRecord(new_model().state_dict()),
            num_rounds=options.rounds, evaluate_fn=evaluate_global)

    run_simulation(server_app, client_app, num_supernodes=NUM_NODES,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})

    result = results["result"]
    flipper = sorted(poisoner.attacker.attack.malicious_clients(NUM_NODES))
    print(f"\ndefense: {options.defense}; label flipper: {flipper}")
    print(f"{'round':>5}  {'accuracy':>8}  {'byzantine':>9}  excluded")
    for server_round, metrics in sorted(result.train_metrics_clientapp.items()):
        accuracy = result.evaluate_metrics_serverapp[server_round]["accuracy"]
        print(f"{server_round:>5}  {accuracy:>8.3f}  "
              f"{str(metrics['fedsec-malicious-clients']):>9}  "
              f"{metrics['fedsec-excluded-clients']}")


if __name__ == "__main__":
    main()
