"""`fedsec matrix`: a 2 x 2 matrix (2 rounds, 2 seeds) produces its table, figures and report
with the right rows, the setting table and published findings checked; a half-finished matrix
resumes running only what is missing; bad matrix configs are clear errors. The statistics of
the verdicts are tested in test_matrix_claims.py."""
from __future__ import annotations

import csv
import io
import re

import pytest
import yaml

import fedsec.matrix.runner as matrix_runner
from fedsec.cli import main
from fedsec.fl.config import ConfigError
from fedsec.matrix import load_matrix, run_matrix

from support.experiments import QUOTE, shipped_matrix_paths, tiny, write_matrix

def test_tiny_matrix_writes_table_figures_and_report(tmp_path):
    matrix = load_matrix(write_matrix(tmp_path))
    assert [c.label for c in matrix.cells] == ["none / fedavg", "none / m-krum",
                                               "byzantine / fedavg", "byzantine / m-krum"]
    out = tmp_path / "out"
    results = run_matrix(matrix, out, progress=False)
    assert all(len(r.seeds) == 2 for r in results)
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [(r["attack"], r["defense"]) for r in rows] == \
        [("none", "fedavg"), ("none", "m-krum"), ("byzantine", "fedavg"), ("byzantine", "m-krum")]
    by = {(r["attack"], r["defense"]): r for r in rows}
    assert all(r["final_test_accuracy_seeds"] == "2" for r in rows)
    assert float(by["byzantine", "fedavg"]["final_test_accuracy_mean"]) < \
        float(by["byzantine", "m-krum"]["final_test_accuracy_mean"]) - 0.3
    assert float(by["byzantine", "m-krum"]["attackers_excluded_mean"]) == 1.0
    assert by["none", "fedavg"]["attackers_excluded_mean"] == ""  # no attackers to exclude
    table = (out / "table.md").read_text()
    assert table.count("\n") == 6 and "| byzantine | m-krum | " in table and " ± " in table
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "backdoor.png").exists()
    report = (out / "report.md").read_text()
    assert report.startswith("# Tiny: Byzantine vs m-Krum\n\n| setting | paper | here | why "
                             "it differs |\n| --- | --- | --- | --- |\n| dataset | CIFAR-10 | "
                             "digits | shipped with fedsec |\n")
    assert "| malicious | 1 | 2 | a stronger attack |" in report
    assert "--seeds 2" in report and table in report and "![Test accuracy per round]" in report
    assert "| m-Krum restores accuracy under Byzantine clients (final_test_accuracy) | " \
           "FedMLSecurity, Exp3, Section 5.1 | holds | holds | byzantine / m-krum - none / " \
           "fedavg: " in report and "| agrees |" in report
    assert f"> {QUOTE}" in report and "95% [" in report
    # a contradicted finding with its note
    assert "| contradicted | " in report and "**disagrees**" in report
    assert "random models weigh 2/10" in report
    resolved = yaml.safe_load((out / "configs" / "attack-byzantine__defense-m-krum.yaml")
                              .read_text())
    assert resolved["defense_args"]["defense_type"] == "krum"
    assert resolved["attack_args"]["attack_type"] == "byzantine"
    assert (out / "configs" / "matrix.yaml").exists()



def test_a_two_axis_matrix_as_grids_with_its_untestable_findings(tmp_path):
    """heatmaps: one grid per metric (table and figure) instead of per-round curves, the
    claims' cells marked; seeds.csv holds every run; untestable findings are listed in the
    report and the index, and each finding's sentence and the stand-in reach the index."""
    from fedsec.matrix.index import write_index

    untestable = [{"source": "FedMLSecurity, Exp6, Section 5.1", "quote": "ResNet-56 fails.",
                   "why": "hours a run here"}]
    matrix = load_matrix(write_matrix(
        tmp_path, heatmaps={"rows": "defense", "columns": "attack",
                            "metrics": ["final_test_accuracy", "final_backdoor_accuracy"]},
        untestable=untestable))
    out = tmp_path / "results" / "tiny"
    results = run_matrix(matrix, out, seeds=2, progress=False)
    report = (out / "report.md").read_text()
    assert not (out / "accuracy.png").exists()  # grids replace the curves
    assert (out / "grid_final_test_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "grid_final_backdoor_accuracy.png").exists()  # no backdoor here
    by = {r.cell.label: r.stats("final_test_accuracy")[0] for r in results}
    grid = report[report.index("| defense \\ attack | none | byzantine |"):]
    lines = grid.splitlines()
    assert lines[2] == (f"| fedavg | {by['none / fedavg'] * 100:.1f} \N{DAGGER} | "
                        f"{by['byzantine / fedavg'] * 100:.1f} \N{DAGGER} |")
    assert lines[3] == (f"| m-krum | {by['none / m-krum'] * 100:.1f} | "
                        f"{by['byzantine / m-krum'] * 100:.1f} \N{DAGGER} |")
    rows = list(csv.DictReader(io.StringIO((out / "seeds.csv").read_text())))
    assert [(r["attack"], r["defense"], r["seed"]) for r in rows[:2]] == \
        [("none", "fedavg", "0"), ("none", "fedavg", "1")]
    mean = sum(float(r["final_test_accuracy"]) for r in rows
               if (r["attack"], r["defense"]) == ("byzantine", "m-krum")) / 2
    assert mean == pytest.approx(by["byzantine / m-krum"])
    assert "## Findings not tested here" in report and \
        "| ResNet-56 fails. | FedMLSecurity, Exp6, Section 5.1 | hours a run here |" in report
    index = write_index(tmp_path / "results", [tmp_path / "tiny.yaml", tmp_path / "other.yaml"]
                        ).read_text()
    assert "## Matrices not run yet" in index and f"- `{tmp_path / 'other.yaml'}`" in index
    assert f"- `{tmp_path / 'tiny.yaml'}`" not in index
    assert "Stand-in: dataset digits (source: CIFAR-10); model lr (source: ResNet-20); " \
           "malicious 2 (source: 1); rounds 2 (source: not stated)." in index
    assert f"  > {QUOTE}" in index
    assert "| ResNet-56 fails. | FedMLSecurity, Exp6, Section 5.1 | [tiny](tiny/report.md): " \
           "hours a run here |" in index


@pytest.mark.parametrize("extra, message", [
    ({"heatmaps": {"rows": "defense", "columns": "defense", "metrics": ["final_test_accuracy"]}},
     "rows / columns naming its two axes"),
    ({"heatmaps": {"rows": "defense", "columns": "attack", "metrics": ["accuracyy"]}},
     "heatmaps.metrics=['accuracyy'] must be a list of table metrics"),
    ({"untestable": [{"source": "s", "quote": "q"}]}, "untestable[0] needs 'why' as text"),
])
def test_bad_grid_and_untestable_keys(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_matrix(write_matrix(tmp_path, **extra))

def test_a_half_finished_matrix_runs_only_the_missing_runs(tmp_path, monkeypatch):
    matrix = load_matrix(write_matrix(tmp_path))
    out = tmp_path / "out"
    calls = []
    real = matrix_runner.run_experiment

    def counting(config, where, **kw):
        calls.append(where)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the sweep is killed during its third run
        return real(config, where, **kw)

    monkeypatch.setattr(matrix_runner, "run_experiment", counting)
    with pytest.raises(KeyboardInterrupt):
        run_matrix(matrix, out, progress=False)
    finished = sorted(p.parent for p in out.glob("cells/*/seed*/summary.json"))
    assert len(finished) == 2
    before = {p: (p / "metrics.jsonl").read_text() for p in finished}
    calls.clear()
    monkeypatch.setattr(matrix_runner, "run_experiment",
                        lambda config, where, **kw: calls.append(where) or real(config, where,
                                                                                **kw))
    run_matrix(matrix, out, progress=False)
    assert len(calls) == 6 and not set(map(str, calls)) & set(map(str, finished))
    assert all((p / "metrics.jsonl").read_text() == text for p, text in before.items())
    assert len(list(out.glob("cells/*/seed*/summary.json"))) == 8


@pytest.mark.parametrize("runs_per_worker", [25, 1])
def test_cli_matrix_with_parallel_jobs(tmp_path, monkeypatch, runs_per_worker):
    """With 1 run per worker the 4 runs take two pools of 2 fresh workers."""
    monkeypatch.setattr(matrix_runner, "RUNS_PER_WORKER", runs_per_worker)
    path = write_matrix(tmp_path)
    assert main(["matrix", str(path), "--seeds", "1", "--jobs", "2", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "table.csv").read_text())))
    assert len(rows) == 4 and all(r["final_test_accuracy_seeds"] == "1" for r in rows)



def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    from pathlib import Path

    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="reads /proc (Linux)")
def test_killing_a_parallel_sweep_leaves_no_worker_behind(tmp_path):
    """SIGKILL of `fedsec matrix --jobs 2` mid-run: its workers leave within seconds, so no
    orphan goes on training and writing into the runs that the next sweep resumes; and that
    sweep then finishes them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = write_matrix(tmp_path)
    raw = yaml.safe_load((tmp_path / "base.yaml").read_text())
    raw["train_args"]["comm_round"] = 40
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fedsec.cli", "matrix", str(path), "--seeds", "1",
               "--jobs", "2", "--out", str(out), "--quiet"]
    sweep = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("cells/*/seed0/metrics.jsonl")):  # a worker is training
        assert time.monotonic() < deadline and sweep.poll() is None, "no run started"
        time.sleep(0.2)
    workers = set()
    for pid in _children(sweep.pid):
        workers |= {pid} | _children(pid)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") and
              open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
              for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the killed sweep"
        time.sleep(0.2)
    assert main(["matrix", str(path), "--seeds", "1", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert len(rows) == 4 and all(r["final_test_accuracy_seeds"] == "1" for r in rows)

@pytest.mark.parametrize("extra,message", [
    ({"axes": {}}, "axes is empty"),
    ({"seeds": 0}, "seeds=0 must be an integer >= 1"),
    ({"rows": 1}, "unknown key 'rows'"),
    ({"axes": {"defense": {"bad": {"defense_args": {"enable_defense": True,
                                                    "defense_type": "krum",
                                                    "byzantine_client_num": 9}}}}},
     "cell bad: .*byzantine_client_num=9 is too large"),
    ({"claims": [{"claim": "x", "expected": "maybe", "metric": "final_test_accuracy",
                  "left": {}, "op": ">=", "value": 1}]}, "expected='maybe' must be"),
    ({"claims": [{"claim": "x", "expected": "holds", "metric": "final_test_accuracy",
                  "left": {}, "op": ">=", "value": 1}]}, "source .* is missing"),
    ({"claims": [{"claim": "x", "expected": "holds", "source": "s",
                  "metric": "final_test_accuracy",
                  "left": {"attack": "none"}, "op": ">=", "value": 1}]},
     "selects 2 cells; name a value for every axis"),
])
def test_bad_matrix_configs(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_matrix(write_matrix(tmp_path, **extra))


def test_every_shipped_paper_matrix_loads_with_every_cell_valid():
    matrices = shipped_matrix_paths()
    assert len(matrices) >= 20
    for path in matrices:
        matrix = load_matrix(path)
        assert matrix.cells and matrix.claims, path.name


def test_index_of_reports(tmp_path):
    """New summaries with their verdicts; one written before intervals still listed."""
    import json

    from fedsec.matrix.index import write_index

    matrix = load_matrix(write_matrix(tmp_path))
    run_matrix(matrix, tmp_path / "results" / "tiny", seeds=1, progress=False)
    old = tmp_path / "results" / "old"
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({
        "title": "Old", "cells": 2, "seeds": 3,
        "claims": [{"claim": "c", "source": "s", "expected": "holds", "here": "fails",
                    "agrees": False, "metric": "final_test_accuracy", "left": 0.5,
                    "right": 0.6, "seeds": 3}]}))
    index = write_index(tmp_path / "results").read_text()
    assert "| [Tiny: Byzantine vs m-Krum](tiny/report.md) | 4 | 1 | Welch's t interval; " \
           "config not in a git checkout | 0 holds, 0 contradicted, 2 inconclusive | " \
           "0 of 2 |" in index
    assert "| Byzantine clients do not hurt FedAvg ([tiny](tiny/report.md)) | none | holds | " \
           "inconclusive | - | - |" in index
    assert "| [Old](old/report.md) | 2 | 3 | means only (older report: regenerate) | 0 holds, " \
           "1 fails, 0 no data | 0 of 1 |" in index
    assert "| c ([old](old/report.md)) | s | holds | fails | - | **disagrees** |" in index


def test_index_compares_a_matrix_with_the_one_it_reruns_on_another_stand_in(tmp_path):
    """Findings matched by their text; only those whose verdicts differ are listed."""
    import json

    from fedsec.matrix.index import write_index

    def claim(text, here, difference):
        return {"claim": text, "source": "s", "expected": "holds", "here": here,
                "agrees": here == "holds", "metric": "final_test_accuracy", "left": 0.5,
                "right": 0.6, "seeds": 5, "difference": difference, "level": 0.95,
                "interval": [difference - 0.01, difference + 0.01]}

    for name, extends, claims in [
            ("digits", None, [claim("zero hurts", "inconclusive", -0.001),
                              claim("random hurts", "holds", -0.4)]),
            ("digits_fmnist", "digits", [claim("zero hurts", "holds", -0.2),
                                         claim("random hurts", "holds", -0.3),
                                         claim("only here", "holds", -0.1)])]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"title": name, "cells": 2, "seeds": 5, "method": "Welch",
             "config_commit": "abc", "extends": extends, "claims": claims}))
    index = write_index(tmp_path).read_text()
    section = index[index.index("## Where the stand-ins disagree"):]
    assert "| zero hurts | [digits](digits/report.md) | inconclusive: -0.001, 95% [-0.011, " \
           "+0.009] | [digits_fmnist](digits_fmnist/report.md) | holds: -0.2, 95% [-0.21, " \
           "-0.19] |" in section
    assert "random hurts" not in section and "only here" not in section
    assert "- [digits](digits/report.md) against [digits_fmnist](digits_fmnist/report.md): " \
           "1 of 2 findings differ" in section


def test_docs_list_every_claim_metric():
    from pathlib import Path

    from fedsec.matrix.config import METRICS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text()
    listed = doc[doc.index("Metrics a claim can name"):]
    assert all(f"`{m}`" in listed for m in METRICS)


def test_a_matrix_extends_another_on_a_stand_in(tmp_path):
    """The same axes and claims; its own base and title; set merged by section, setting by row."""
    parent = load_matrix(write_matrix(tmp_path, set={"train_args": {"batch_size": 8}}))
    (tmp_path / "other_base.yaml").write_text(yaml.safe_dump(tiny(train_args={"comm_round": 3})))
    child_path = tmp_path / "tiny_other.yaml"
    child_path.write_text(yaml.safe_dump({
        "title": "Tiny on another base", "extends": "tiny.yaml", "base": "other_base.yaml",
        "set": {"train_args": {"epochs": 2}},
        "setting": {"rounds": {"paper": 2, "here": 3, "why": "the other base runs 3"}}}))
    child = load_matrix(child_path)
    assert child.title == "Tiny on another base" and child.claims == parent.claims
    assert (child.extends, parent.extends) == ("tiny", None)
    assert [c.label for c in child.cells] == [c.label for c in parent.cells]
    train = child.cells[0].raw["train_args"]
    assert (train["comm_round"], train["batch_size"], train["epochs"]) == (3, 8, 2)
    rows = {r.name: r for r in child.setting}
    assert rows["rounds"].here == "3" and rows["clients"] == {r.name: r for r in parent.setting}["clients"]

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"extends": "tiny_other.yaml"}))
    with pytest.raises(ConfigError, match="extends it back"):
        load_matrix(child_path)
