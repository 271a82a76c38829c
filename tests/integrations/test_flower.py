"""fedsec inside Flower (fedsec.integrations.flower, docs/flower.md).

- A real simulation on Flower's own engine (run_simulation, the Ray backend): 7 nodes train a
  logistic regression for 2 rounds; one client flips its labels (DataPoisoner), and the
  strategy replaces one client's model by noise (byzantine); multi-Krum (f=2, m=5) must
  exclude exactly those two every round, as Flower's own metrics record, and the global model
  must stay finite and accurate.
- aggregate_train on hand-made replies: the kept clients' weighted mean, the Krum scores and
  the ids (partition ids, else node ids) against hand-computed values.
- Config errors are fedsec's; without flwr, the import names the extra to install.
- The README section "Using fedsec with Flower" runs as written (a second simulation).

The Flower tests skip when flwr is not installed (`pip install "fedsec[flower]"`).
"""
from __future__ import annotations

import importlib
import math
import os
import re
import sys
import time

# Before flwr is imported (it reads these once): no telemetry or usage reports from tests.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

README_SECTION = "Using fedsec with Flower"

try:
    from flwr.app import (ArrayRecord, Context, Message, MessageType, Metadata,  # noqa: E402
                          MetricRecord, RecordDict)
    from flwr.clientapp import ClientApp  # noqa: E402
    from flwr.serverapp import Grid, ServerApp  # noqa: E402
    from flwr.simulation import run_simulation  # noqa: E402

    from fedsec.integrations.flower import DataPoisoner, FedSecStrategy  # noqa: E402
    FLWR_MISSING = None
except ImportError as exc:  # the tests that need Flower skip, one by one
    FLWR_MISSING = str(exc)

from fedsec.models import build_model  # noqa: E402
from support.readme import readme_python_blocks  # noqa: E402

needs_flwr = pytest.mark.skipif(FLWR_MISSING is not None,
                                reason=f'flwr is not installed (pip install "fedsec[flower]"): '
                                       f'{FLWR_MISSING}')

# --- the simulated federation --------------------------------------------------------------------

NUM_NODES = 7
FEATURES = 8
SAMPLES_PER_CLIENT = 64
MU = 0.75  # class means at +-MU in every feature: the classes are 2 * MU * sqrt(8) ~ 4.2 sd apart
LABEL_FLIPPING = {"enable_attack": True, "attack_type": "label_flipping",
                  "original_class_list": [0, 1], "target_class_list": [1, 0],
                  "poisoned_client_num": 1, "seed": 0}
BYZANTINE = {"enable_attack": True, "attack_type": "byzantine", "attack_mode": "random",
             "byzantine_client_num": 1}
MULTI_KRUM = {"enable_defense": True, "defense_type": "krum", "byzantine_client_num": 2,
              "krum_param_m": 5}


def blobs(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian classes, labels 0/1 equally likely, features N(+-MU, 1)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (count,), generator=gen)
    features = torch.randn(count, FEATURES, generator=gen) + MU * (2.0 * labels - 1.0)[:, None]
    return features, labels


def new_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lr", input_shape=(FEATURES,), num_classes=2)


def accuracy(state: dict, features: torch.Tensor, labels: torch.Tensor) -> float:
    model = new_model()
    model.load_state_dict(state)
    with torch.no_grad():
        return float((model(features).argmax(1) == labels).float().mean())


POISONER = DataPoisoner(LABEL_FLIPPING, num_nodes=NUM_NODES) if FLWR_MISSING is None else None

if FLWR_MISSING is None:
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        """20 full-batch gradient steps on the client's partition (poisoned if malicious)."""
        partition = context.node_config["partition-id"]
        features, labels = blobs(SAMPLES_PER_CLIENT, seed=100 + partition)
        features, labels = POISONER.poison(features, labels, context,
                                           msg.content["config"]["server-round"])
        model = new_model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(20):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(features), labels)
            loss.backward()
            optimizer.step()
        metrics = {"num-examples": len(labels), "partition-id": partition,
                   "train_loss": float(loss)}
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                                   "metrics": MetricRecord(metrics)}), reply_to=msg)


@pytest.fixture(scope="module")
def simulation():
    """One Flower simulation: the strategy's Result and the strategy itself."""
    test_x, test_y = blobs(2000, seed=1)
    out = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedSecStrategy(num_nodes=NUM_NODES, defense_args=MULTI_KRUM,
                                  attack_args=BYZANTINE, fraction_evaluate=0.0)
        out["result"] = strategy.start(
            grid=grid, initial_arrays=ArrayRecord(new_model().state_dict()), num_rounds=2,
            evaluate_fn=lambda rnd, arrays: MetricRecord(
                {"accuracy": accuracy(arrays.to_torch_state_dict(), test_x, test_y)}))
        out["strategy"] = strategy

    run_simulation(server_app, client_app, num_supernodes=NUM_NODES,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    return out


@needs_flwr
def test_simulation_multi_krum_excludes_both_attackers_every_round(simulation):
    flipper = sorted(POISONER.attack.malicious_clients(NUM_NODES))
    assert len(flipper) == 1
    rounds = simulation["result"].train_metrics_clientapp
    assert sorted(rounds) == [1, 2]
    for server_round, metrics in rounds.items():
        assert metrics["fedsec-clients"] == list(range(NUM_NODES))  # partition ids, ascending
        byzantine = metrics["fedsec-malicious-clients"]
        assert len(byzantine) == 1
        excluded = metrics["fedsec-excluded-clients"]
        assert set(byzantine) | set(flipper) <= set(excluded), \
            (server_round, byzantine, flipper, metrics["fedsec-krum-scores"])
        assert len(excluded) == NUM_NODES - MULTI_KRUM["krum_param_m"]
        assert "partition-id" not in metrics  # an id, not a metric to average
        assert math.isfinite(metrics["train_loss"])
        assert metrics["fedsec-aggregation-time-s"] >= 0.0
    reasons = simulation["strategy"].round_metrics[2]["exclusion_reasons"]
    assert set(reasons) == set(rounds[2]["fedsec-excluded-clients"])


@needs_flwr
def test_simulation_global_model_is_finite_and_accurate(simulation):
    result = simulation["result"]
    state = result.arrays.to_torch_state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())
    accuracies = {r: m["accuracy"] for r, m in result.evaluate_metrics_serverapp.items()}
    assert accuracies[0] < 0.5 and accuracies[2] > 0.95, accuracies  # the Bayes rate is ~98%


# --- aggregate_train on hand-made replies --------------------------------------------------------

# Client i's model is w = VALUES[i] in each of its 3 coordinates, trained on 10 (i + 1) samples,
# reporting partition id 4 - i and train_loss = VALUES[i].
VALUES = [0.0, 1.0, 100.0, 3.0, 7.0]


def replies(*, with_partition_ids: bool = True) -> list:
    out = []
    for i, value in enumerate(VALUES):
        metrics = {"num-examples": 10 * (i + 1), "train_loss": value}
        if with_partition_ids:
            metrics["partition-id"] = 4 - i
        metadata = Metadata(run_id=1, message_id=f"reply-{i}", src_node_id=9000 + i,
                            dst_node_id=0, reply_to_message_id=f"ins-{i}", group_id="1",
                            created_at=time.time(), ttl=60.0, message_type=MessageType.TRAIN)
        content = RecordDict({"arrays": ArrayRecord({"w": torch.full((3,), value)}),
                              "metrics": MetricRecord(metrics)})
        out.append(Message(content, metadata=metadata))
    return out


def strategy_after_configure(**options) -> FedSecStrategy:
    strategy = FedSecStrategy(num_nodes=5, **options)
    strategy.current_arrays = ArrayRecord({"w": torch.zeros(3)})  # as configure_train keeps it
    return strategy


@needs_flwr
def test_aggregate_train_keeps_krums_choice_and_reports_partition_ids():
    strategy = strategy_after_configure(defense_args={
        "enable_defense": True, "defense_type": "krum", "byzantine_client_num": 1,
        "krum_param_m": 4})
    arrays, metrics = strategy.aggregate_train(1, replies())
    # By partition id: 0 -> 7 (50 samples), 1 -> 3 (40), 2 -> 100 (30), 3 -> 1 (20), 4 -> 0 (10).
    # Krum score (n - f - 2 = 2 nearest, 3 coordinates): 0: 3*(16+36), 1: 3*(4+9),
    # 2: 3*(93^2+97^2), 3: 3*(1+4), 4: 3*(1+9). m = 4 keeps all but partition 2.
    assert metrics["fedsec-clients"] == [0, 1, 2, 3, 4]
    assert metrics["fedsec-krum-scores"] == pytest.approx([156.0, 39.0, 54174.0, 15.0, 30.0])
    assert metrics["fedsec-excluded-clients"] == [2]
    expected = (7 * 50 + 3 * 40 + 1 * 20 + 0 * 10) / 120
    got = arrays.to_torch_state_dict()["w"].double()
    assert torch.allclose(got, torch.full((3,), expected, dtype=torch.float64), atol=1e-5)
    assert metrics["train_loss"] == pytest.approx(expected)  # averaged over the kept clients
    assert "partition-id" not in metrics
    assert strategy.round_metrics[1]["exclusion_reasons"] == {2: "not selected by krum"}
    # No attacker: the one exclusion is a false positive, and recall is undefined (NaN).
    assert (metrics["fedsec-detection-fp"], metrics["fedsec-detection-tn"]) == (1, 4)
    assert metrics["fedsec-detection-precision"] == 0.0
    assert math.isnan(metrics["fedsec-detection-recall"])


@needs_flwr
def test_aggregate_train_falls_back_to_node_ids_and_plain_fedavg():
    strategy = strategy_after_configure()
    arrays, metrics = strategy.aggregate_train(1, replies(with_partition_ids=False))
    assert metrics["fedsec-clients"] == [9000, 9001, 9002, 9003, 9004]
    assert metrics["fedsec-excluded-clients"] == []
    weights = [10 * (i + 1) for i in range(5)]
    expected = sum(w * v for w, v in zip(weights, VALUES)) / sum(weights)
    got = arrays.to_torch_state_dict()["w"].double()
    assert torch.allclose(got, torch.full((3,), expected, dtype=torch.float64), atol=1e-4)


@needs_flwr
def test_median_strategy_ignores_the_outlier():
    strategy = strategy_after_configure(defense_args={"enable_defense": True,
                                                      "defense_type": "median"})
    arrays, _ = strategy.aggregate_train(1, replies())
    assert torch.equal(arrays.to_torch_state_dict()["w"], torch.full((3,), 3.0))


# --- configuration --------------------------------------------------------------------------------

@needs_flwr
def test_defense_parameters_are_checked_against_flowers_sampling():
    krum = {"enable_defense": True, "defense_type": "krum", "byzantine_client_num": 2}
    with pytest.raises(ValueError, match=r"byzantine_client_num=2 .*client_num_per_round=5"):
        FedSecStrategy(num_nodes=5, defense_args=krum)
    # fraction_train=0.5 of 20 nodes: FedAvg samples 10 per round, and Krum(f=2) fits 10.
    strategy = FedSecStrategy(num_nodes=20, defense_args=krum, fraction_train=0.5)
    assert (strategy.federation.client_num_in_total,
            strategy.federation.client_num_per_round) == (20, 10)
    with pytest.raises(ValueError, match=r"unknown defense_type 'krumm'"):
        FedSecStrategy(num_nodes=20, defense_args={**krum, "defense_type": "krumm"})
    with pytest.raises(ValueError, match=r"num_nodes must be a positive integer; got 0"):
        FedSecStrategy(num_nodes=0)


@needs_flwr
def test_each_side_rejects_the_other_sides_attacks():
    with pytest.raises(ValueError, match=r"'label_flipping' does not poison models.*DataPoisoner"):
        FedSecStrategy(num_nodes=5, attack_args=LABEL_FLIPPING)
    with pytest.raises(ValueError, match=r"'byzantine' does not poison training data"):
        DataPoisoner(BYZANTINE, num_nodes=5)


# --- the client-side helper -----------------------------------------------------------------------

def node_context(partition: int, num_partitions: int = 4) -> Context:
    return Context(run_id=1, node_id=500 + partition,
                   node_config={"partition-id": partition, "num-partitions": num_partitions},
                   state=RecordDict(), run_config={})


@needs_flwr
def test_data_poisoner_flips_only_the_malicious_clients_labels():
    poisoner = DataPoisoner({**LABEL_FLIPPING, "original_class_list": [3],
                             "target_class_list": [9]}, num_nodes=4)
    features = torch.arange(12.0).reshape(6, 2)
    labels = torch.tensor([3, 1, 3, 9, 0, 3])
    malicious = [p for p in range(4) if poisoner.is_malicious(node_context(p), server_round=1)]
    assert len(malicious) == 1
    for partition in range(4):
        x, y = poisoner.poison(features, labels, node_context(partition), server_round=2)
        assert x is features
        if partition in malicious:
            assert y.tolist() == [9, 1, 9, 9, 0, 9]
        else:
            assert y is labels
    assert labels.tolist() == [3, 1, 3, 9, 0, 3]  # the input is never modified


@needs_flwr
def test_data_poisoner_backdoor_has_one_attacker_per_round_across_nodes():
    """Model replacement draws one attacker per round among the clients: every node must agree
    on which, not each find itself chosen (its round context holds the whole federation)."""
    poisoner = DataPoisoner({"enable_attack": True, "attack_type": "model_replacement"},
                            num_nodes=6)
    attackers = [[p for p in range(6)
                  if poisoner.is_malicious(node_context(p, num_partitions=6), server_round=r)]
                 for r in range(1, 6)]
    assert all(len(a) == 1 for a in attackers), attackers
    assert len({a[0] for a in attackers}) > 1  # redrawn across rounds


@needs_flwr
def test_data_poisoner_checks_the_nodes_identity():
    poisoner = DataPoisoner(LABEL_FLIPPING, num_nodes=4)
    x, y = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"num-partitions=5 .*num_nodes=4"):
        poisoner.poison(x, y, node_context(0, num_partitions=5), server_round=1)
    with pytest.raises(ValueError, match=r"partition-id=4 must be an integer between 0 and"):
        poisoner.poison(x, y, node_context(4), server_round=1)
    no_id = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(ValueError, match=r"no 'partition-id'"):
        poisoner.poison(x, y, no_id, server_round=1)
    with pytest.raises(ValueError, match=r"server_round must be an integer >= 1"):
        poisoner.poison(x, y, node_context(0), server_round=0)


# --- without flwr ---------------------------------------------------------------------------------

def test_import_without_flwr_names_the_extra(monkeypatch):
    # None in sys.modules makes every import of flwr fail, as when it is not installed.
    for name in ["flwr", *(m for m in sys.modules if m.startswith("flwr."))]:
        monkeypatch.setitem(sys.modules, name, None)
    for name in [m for m in sys.modules if m.startswith("fedsec.integrations.flower")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=re.escape('pip install "fedsec[flower]"')):
        importlib.import_module("fedsec.integrations.flower")
    # the rest of fedsec does not need it
    fedml = importlib.import_module("fedsec.integrations.fedml")
    assert fedml.FedMLDefender().is_defense_enabled() is False


# --- the README section ---------------------------------------------------------------------------

@needs_flwr
def test_readme_flower_example_runs():
    (code,) = readme_python_blocks(README_SECTION)
    namespace = {"__name__": "readme_flower_example"}
    exec(compile(code, f"README.md ({README_SECTION})", "exec"), namespace)
    rounds = namespace["rounds"]
    assert sorted(rounds) == [1, 2]
    for metrics in rounds.values():
        assert metrics["fedsec-malicious-clients"]
        assert set(metrics["fedsec-malicious-clients"]) <= set(metrics["fedsec-excluded-clients"])


def test_a_matrix_cell_through_flowers_engine_matches_the_in_process_run(tmp_path):
    """fedsec.integrations.flower.simulation: a Byzantine cell with m-Krum, run by `fedsec
    matrix` in-process and then through Flower's simulation engine (one virtual client per
    fedsec client), gives the same accuracy every round: same data, training, seeds, attack
    and defense, another engine."""
    import json

    import yaml

    from fedsec.integrations.flower.simulation import compare_matrix
    from fedsec.matrix import load_matrix, run_matrix
    from support.experiments import BYZANTINE, tiny

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny(
        attack_args=BYZANTINE, train_args={"client_num_in_total": 7, "client_num_per_round": 7,
                                           "comm_round": 2})))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({
        "title": "one cell", "base": "base.yaml", "axes": {"defense": {"m-krum": {
            "defense_args": {"enable_defense": True, "defense_type": "krum",
                             "byzantine_client_num": 2, "krum_param_m": 3}}}}}))
    out = tmp_path / "out"
    run_matrix(load_matrix(tmp_path / "m.yaml"), out, seeds=1, progress=False)
    with pytest.raises(ValueError, match=r"--cell \{'defense': 'krum'\}: not an axis value"):
        compare_matrix(str(tmp_path / "m.yaml"), out, seed=0, where={"defense": "krum"})
    result = compare_matrix(str(tmp_path / "m.yaml"), out, seed=0, where={"defense": "m-krum"})
    assert result["command"].endswith("--seed 0 --cell defense=m-krum")
    (cell,) = result["cells"]
    assert len(cell["in_process"]) == len(cell["test_accuracy"]) == 2
    assert cell["max_abs_difference"] <= 1e-6, cell
    assert json.loads((out / "flower.json").read_text())["cells"][0]["cell"] == "m-krum"
    assert "| m-krum | " in (out / "flower.md").read_text()
    assert (out / "flower.png").read_bytes()[:4] == b"\x89PNG"
