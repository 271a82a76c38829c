"""The thread policy (fedsec/threads.py): the budget comes from FEDSEC_NUM_THREADS or the cores
the process may use (affinity, cgroup quota), the configured pools never exceed it, small
models train on one torch thread, and matrix workers share the cores so that `--jobs 2` gives
the numbers of `--jobs 1`."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest
import torch
import yaml

import fedsec
import fedsec.threads as threads
from fedsec.cli import main
from fedsec.models import build_model

from support.experiments import tiny


def test_budget_is_the_environment_or_the_available_cores(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.thread_budget() == threads.available_cores() >= 1
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.thread_budget() == 3


@pytest.mark.parametrize("value", ["0", "-2", "two", ""])
def test_bad_budget_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(threads.ENV, value)
    with pytest.raises(ValueError, match=f"FEDSEC_NUM_THREADS={value!r} must be a positive integer"):
        threads.thread_budget()


def test_affinity_limits_the_cores():
    code = ("import os, fedsec.threads as t; os.sched_setaffinity(0, {0}); "
            "print(t.available_cores())")
    env = {k: v for k, v in os.environ.items() if k != threads.ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.strip() == "1"


@pytest.mark.parametrize("v2,v1,cores", [
    ("150000 100000\n", None, 2), ("max 100000\n", None, None), (None, ("50000", "100000"), 1),
    (None, ("-1", "100000"), None),
])
def test_cgroup_quota_caps_the_cores(tmp_path, monkeypatch, v2, v1, cores):
    monkeypatch.setattr(threads, "CGROUP_V2_MAX", tmp_path / "cpu.max")
    monkeypatch.setattr(threads, "CGROUP_V1_CPU", tmp_path / "cpu")
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    affinity = len(os.sched_getaffinity(0))
    assert threads.available_cores() == (min(affinity, cores) if cores else affinity)


@pytest.mark.parametrize("flops", [None, 1e3, 1e9])
@pytest.mark.parametrize("budget", ["1", "2"])
def test_configured_pools_never_exceed_the_budget(monkeypatch, flops, budget):
    monkeypatch.setenv(threads.ENV, budget)
    before = torch.get_num_threads(), fedsec.build_info()["num_threads"]
    try:
        got = threads.apply(flops)
        assert got["budget"] == int(budget)
        assert 1 <= torch.get_num_threads() == got["torch_intra_op"] <= int(budget)
        assert got["native"] == fedsec.build_info()["num_threads"] == int(budget)
        assert got["torch_intra_op"] == (1 if flops == 1e3 else int(budget))
    finally:
        torch.set_num_threads(before[0])
        fedsec.set_num_threads(before[1])


def test_workers_share_the_budget(monkeypatch):
    monkeypatch.setenv(threads.ENV, "5")
    assert [threads.worker_budget(j) for j in (1, 2, 3, 8)] == [5, 2, 1, 1]


@pytest.mark.parametrize("model,shape,small", [
    ("lr", (1, 28, 28), True), ("lenet5", (1, 28, 28), True), ("cnn", (1, 28, 28), False),
    ("bilstm", (80,), False),
])
def test_small_models_train_on_one_thread(model, shape, small):
    net = build_model(model, input_shape=shape, num_classes=80 if len(shape) == 1 else 10)
    sample = torch.zeros((1, *shape), dtype=torch.long if len(shape) == 1 else torch.float32)
    assert (threads.forward_flops(net, sample) < threads.SMALL_STEP_FLOPS) == small


def test_lr_forward_flops_by_hand():
    net = build_model("lr", input_shape=(1, 28, 28), num_classes=10)
    assert threads.forward_flops(net, torch.zeros(1, 1, 28, 28)) == 2 * 784 * 10


def test_matrix_with_two_jobs_gives_the_numbers_of_one(tmp_path, monkeypatch):
    monkeypatch.setenv(threads.ENV, "2")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny(train_args={"comm_round": 2})))
    krum = {"enable_defense": True, "defense_type": "krum", "byzantine_client_num": 1,
            "krum_param_m": 5}
    matrix = {"title": "jobs", "base": "base.yaml", "seeds": 2,
              "axes": {"defense": {"fedavg": {"defense_args": {"enable_defense": False}},
                                   "m-krum": {"defense_args": krum}}}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(matrix))
    tables = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        assert main(["matrix", str(tmp_path / "m.yaml"), "--jobs", jobs, "--out", str(out),
                     "--quiet"]) == 0
        rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
        tables.append([{k: v for k, v in r.items() if "time" not in k} for r in rows])
    assert tables[0] == tables[1]
