"""`fedsec run` and `fedsec plot`: the run directory's files, refusing to overwrite, resuming
an interrupted run (in process, and after a real SIGKILL) to exactly the numbers of an
uninterrupted one, with a stateful defense (FoolsGold) and server optimizer (FedAdam)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from fedsec.cli import main
from fedsec.fl import Experiment, parse_config, run_experiment

from support.experiments import STATEFUL, records, tiny, without_times
def test_run_writes_config_metrics_summary_and_plot(tmp_path):
    config = parse_config(tiny())
    summary = run_experiment(config, tmp_path / "run", progress=False)
    out = tmp_path / "run"
    assert yaml.safe_load((out / "config.yaml").read_text()) == config.to_dict()
    rows = records(out)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["final_test_accuracy"] == rows[-1]["test_accuracy"]
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_run_resumes_to_the_uninterrupted_numbers(tmp_path, monkeypatch):
    config = parse_config(STATEFUL)
    straight = without_times(list(Experiment(config).rounds()))

    real_round = Experiment.run_round

    def crash_in_round_three(self):
        if self.round == 3:
            raise KeyboardInterrupt  # the process dies mid-round
        return real_round(self)

    monkeypatch.setattr(Experiment, "run_round", crash_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path, progress=False)
    assert len(records(tmp_path)) == 3 and not (tmp_path / "summary.json").exists()
    monkeypatch.setattr(Experiment, "run_round", real_round)
    first_three = (tmp_path / "metrics.jsonl").read_text().splitlines()
    run_experiment(config, tmp_path, resume=True, progress=False)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines[:3] == first_three  # finished rounds are never rewritten
    assert without_times(records(tmp_path)) == straight


def test_killed_process_resumes_to_the_uninterrupted_numbers(tmp_path):
    """A real `fedsec run` killed with SIGKILL once two rounds are on disk."""
    raw = {**STATEFUL, "train_args": {**STATEFUL["train_args"], "comm_round": 12}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "fedsec.cli", "run", str(tmp_path / "exp.yaml"),
                             "--out", str(out), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and len(records(out)) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(records(out))
    assert 2 <= done < 12 and not (out / "summary.json").exists()
    assert main(["run", str(tmp_path / "exp.yaml"), "--out", str(out), "--resume",
                 "--quiet"]) == 0
    straight = without_times(list(Experiment(parse_config(raw)).rounds()))
    assert without_times(records(out)) == straight


def test_cli_refuses_to_overwrite_and_plot_overlays_runs(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny(train_args={"comm_round": 2})))
    assert main(["run", str(config), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["run", str(config), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "already holds a run (2 rounds done); pass --resume" in capsys.readouterr().err
    assert main(["run", str(config), "--out", str(tmp_path / "b"), "--quiet",
                 "--set", "attack_args.enable_attack=true",
                 "--set", "attack_args.attack_type=byzantine"]) == 0
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["run", str(config), "--out", str(tmp_path / "c"), "--quiet",
                 "--set", "train_args.comm_round=zero"]) == 2
    assert "train_args.comm_round must be an integer; got 'zero'" in capsys.readouterr().err
