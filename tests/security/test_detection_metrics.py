"""Detection metrics: precision, recall and false-positive rate of a defense's exclusions
against the round's malicious clients, on hand cases, through the pipeline, in short real FL
runs (a model-poisoning and a data-poisoning attack), and as the matrix table's columns."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from fedsec.fl import Experiment, parse_config
from fedsec.matrix.config import Cell
from fedsec.matrix.results import CellResult, SeedResult
from fedsec.matrix.table import csv_table, markdown_table
from fedsec.security import aggregate_round, build_defense, fedavg
from fedsec.security.detection import detection, down_weighted, left_out, mean_over_rounds

from support.security import FED, make_round
from support.experiments import tiny


# --- hand cases -----------------------------------------------------------------------------------

def test_counts_and_ratios_by_hand():
    # 10 clients; malicious {100, 101, 105}; left out {100, 101, 102}; 999 sent no model.
    d = detection(range(100, 110), [100, 101, 105, 999], [100, 101, 102, 999])
    assert (d.tp, d.fp, d.fn, d.tn) == (2, 1, 1, 6)
    assert d.precision == pytest.approx(2 / 3) and d.recall == pytest.approx(2 / 3)
    assert d.fpr == pytest.approx(1 / 7)


def test_undefined_ratios_are_null_not_zero():
    clean = detection(range(5), [], [])  # no attacker, nobody left out
    assert (clean.precision, clean.recall, clean.fpr) == (None, None, 0.0)
    assert json.loads(json.dumps(clean.as_record()))["precision"] is None
    missed = detection(range(5), [0], [])  # an attacker, nobody left out
    assert (missed.precision, missed.recall, missed.fpr) == (None, 0.0, 0.0)
    all_bad = detection(range(3), [0, 1, 2], [0])  # no honest client: no false-positive rate
    assert (all_bad.precision, all_bad.recall, all_bad.fpr) == (1.0, pytest.approx(1 / 3), None)


def test_down_weighted_means_below_half_an_equal_share():
    # shares 1/3.1 = 0.32 and 0.1/3.1 = 0.032 against 0.5 / 4 = 0.125
    assert down_weighted({1: 1.0, 2: 1.0, 3: 1.0, 4: 0.1}) == {4}
    # 0.3 / 3.3 = 0.09 against 0.5 / 4: below, although not 0
    assert down_weighted({1: 1.0, 2: 1.0, 3: 1.0, 4: 0.3}) == {4}
    assert down_weighted({1: 1.0, 2: 1.0, 3: 1.0, 4: 0.6}) == set()  # 0.17 >= 0.125
    assert down_weighted({1: 0.0, 2: 0.0}) == {1, 2}  # nobody averaged in
    assert left_out({"excluded_clients": [7], "client_weights": {1: 1.0, 2: 0.0}}) == {7, 2}


# --- through the pipeline -------------------------------------------------------------------------

def _round_with(defense_type: str, **params):
    """make_round's clients 100 and 101 attack (moved by 10 per coordinate); the attack's
    report of them, as an attack writes it."""
    models, g, ctx = make_round(bad=(0, 1))
    ctx.metrics["malicious_clients"] = [100, 101]
    defense = build_defense({"enable_defense": True, "defense_type": defense_type, **params},
                            FED)
    aggregate_round(None, defense, models, g, ctx, fedavg)
    return ctx.metrics["detection"]


def test_a_filter_reports_its_exclusions():
    # multi-Krum keeps 5 of 10: both far attackers and 3 honest clients are left out.
    got = _round_with("krum", byzantine_client_num=2, krum_param_m=5)
    assert got == {"precision": 0.4, "recall": 1.0, "fpr": 3 / 8, "tp": 2, "fp": 3, "fn": 0,
                   "tn": 5}


def test_a_down_weighting_rule_counts_as_leaving_out():
    # RFA's Weiszfeld weights of the attackers (10 per coordinate away) are near 0, the honest
    # ones near 1/8: recall 1, no false positive.
    got = _round_with("rfa")
    assert (got["tp"], got["fp"], got["fn"], got["tn"]) == (2, 0, 0, 8)


def test_a_rule_using_every_client_leaves_nobody_out():
    got = _round_with("median")
    assert (got["precision"], got["recall"], got["fpr"]) == (None, 0.0, 0.0)


def test_no_defense_no_detection():
    models, g, ctx = make_round(bad=(0, 1))
    aggregate_round(None, None, models, g, ctx, fedavg)
    assert "detection" not in ctx.metrics


# --- real FL runs ---------------------------------------------------------------------------------

def test_krum_against_byzantine_clients_in_a_run():
    # 10 clients, 2 of them sending random models each round; multi-Krum f=2 keeps 5. Random
    # models are far from the honest cloud, so Krum must leave both out in every round:
    # recall 1, precision 2/5, FPR 3/8, exactly.
    raw = tiny(attack_args={"enable_attack": True, "attack_type": "byzantine",
                            "attack_mode": "random", "byzantine_client_num": 2},
               defense_args={"enable_defense": True, "defense_type": "krum",
                             "byzantine_client_num": 2, "krum_param_m": 5})
    records = list(Experiment(parse_config(raw)).rounds())
    assert len(records) == 3
    for r in records:
        assert len(r["malicious_clients"]) == 2
        assert r["detection"] == {"precision": 0.4, "recall": 1.0, "fpr": 0.375, "tp": 2,
                                  "fp": 3, "fn": 0, "tn": 5}, r["round"]


def test_data_poisoning_clients_count_in_the_rounds_they_train():
    # Label flipping by 3 fixed clients from round 1 on: round 0 has no attacker (recall
    # undefined, every exclusion a false positive); rounds 1-2 name the 3 clients, and
    # detection counts them (tp + fn = 3).
    raw = tiny(attack_args={"enable_attack": True, "attack_type": "label_flipping",
                            "poisoned_client_num": 3, "attack_start_round": 1},
               defense_args={"enable_defense": True, "defense_type": "krum",
                             "byzantine_client_num": 2, "krum_param_m": 5})
    experiment = Experiment(parse_config(raw))
    records = list(experiment.rounds())
    expected = sorted(experiment.attack.malicious_clients(10))
    assert "malicious_clients" not in records[0]
    assert records[0]["detection"]["recall"] is None
    assert records[0]["detection"]["fp"] == 5 and records[0]["detection"]["tp"] == 0
    for r in records[1:]:
        assert r["malicious_clients"] == expected
        assert r["detection"]["tp"] + r["detection"]["fn"] == 3
        assert r["detection"]["tp"] + r["detection"]["fp"] == 5


# --- the matrix table -----------------------------------------------------------------------------

def _seed(seed: int, rounds: list[dict | None]) -> SeedResult:
    return SeedResult(seed, {}, [{"round": i, **({"detection": d} if d else {})}
                                 for i, d in enumerate(rounds)])


def _ratios(precision, recall, fpr) -> dict:
    return {"precision": precision, "recall": recall, "fpr": fpr}


def test_matrix_table_shows_the_mean_over_rounds():
    # seed 0: precision (0.5, undefined, 1.0) -> 0.75; seed 1: (0.25, 0.25) -> 0.25.
    # The cell: mean 0.5, sample std of (0.75, 0.25) = 0.354. fpr: 0.1 and 0.3 -> 0.2 ± 0.141.
    krum = CellResult(Cell((("defense", "krum"),), {}), (
        _seed(0, [_ratios(0.5, 1.0, 0.1), _ratios(None, None, 0.0), _ratios(1.0, 1.0, 0.2)]),
        _seed(1, [_ratios(0.25, 1.0, 0.3), _ratios(0.25, 0.5, 0.3)])))
    fedavg_cell = CellResult(Cell((("defense", "fedavg"),), {}), (_seed(0, [None, None]),))
    assert mean_over_rounds(krum.seeds[0].records, "precision") == 0.75
    assert krum.stats("detection_precision") == pytest.approx((0.5, np.sqrt(0.125), 2))
    assert krum.stats("detection_recall") == pytest.approx((0.875, np.sqrt(0.03125), 2))
    assert fedavg_cell.stats("detection_fpr") is None
    table = markdown_table([krum, fedavg_cell], ["defense"])
    head, _, krum_row, fedavg_row = table.splitlines()
    assert "detection precision (%) | detection recall (%) | detection FPR (%)" in head
    assert "| 50.0 ± 35.4 | 87.5 ± 17.7 | 20.0 ± 14.1 |" in krum_row
    assert fedavg_row == "| fedavg | - | - | - |"
    rows = list(csv.DictReader(io.StringIO(csv_table([krum, fedavg_cell], ["defense"]))))
    assert float(rows[0]["detection_precision_mean"]) == 0.5
    assert rows[1]["detection_precision_mean"] == "" and rows[1]["detection_precision_seeds"] == "0"
