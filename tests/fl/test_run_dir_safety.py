"""A run directory never loses data nor holds silently wrong data: one writer at a time (a real
second `fedsec run` is refused, a dead writer's lock taken over), lost records restored from
the checkpoint, a failed start leaves nothing behind, a damaged checkpoint or a missing
directory is a clear error, and Ctrl-C (a real SIGINT) stops cleanly and resumes exactly."""
from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fedsec.cli import main
from fedsec.fl import Experiment, RunDir, RunDirError, parse_config, run_experiment

from support.experiments import tiny, without_times
from support.experiments import STATEFUL, records

LONG = {**STATEFUL, "train_args": {**STATEFUL["train_args"], "comm_round": 12}}


@functools.lru_cache
def _straight(text: str) -> list[dict]:
    """The records of an uninterrupted run of the config ``text`` (YAML), without times."""
    return without_times(list(Experiment(parse_config(yaml.safe_load(text))).rounds()))


def _write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _default_sigint() -> None:
    # A shell's background job inherits SIGINT ignored, and Python keeps it ignored then.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fedsec.cli", "run", str(config), "--out", str(out), "--quiet",
            *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _start(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(_cli(config, out), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _wait_for_records(out: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and len(records(out)) >= n:
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"the run did not write {n} records in time; stderr: {proc.communicate()[1]}")


# --- 1. one writer at a time ------------------------------------------------------------------

def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path):
    config, out = _write_config(tmp_path, LONG), tmp_path / "run"
    first = _start(config, out)
    try:
        _wait_for_records(out, 2, first)
        first.send_signal(signal.SIGSTOP)  # frozen mid-run, holding the lock
        before = (out / "metrics.jsonl").read_bytes(), (out / "config.yaml").read_bytes()
        second = subprocess.run(_cli(config, out, "--resume"), env=_env(), capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert (f"fedsec run: error: {str(out)!r} is in use: process {first.pid} is writing it "
                f"(it holds {str(out / 'lock')!r})") in second.stderr
        assert ((out / "metrics.jsonl").read_bytes(), (out / "config.yaml").read_bytes()) == before
    finally:
        first.kill()
        first.wait()
    # The dead process's PID is still in the lock file; the kernel released its lock.
    assert (out / "lock").read_text().strip() == str(first.pid)
    assert main(["run", str(config), "--out", str(out), "--resume", "--quiet"]) == 0
    assert without_times(records(out)) == _straight(yaml.safe_dump(LONG))
    assert json.loads((out / "summary.json").read_text())["rounds"] == 12


def test_the_lock_is_held_for_the_run_and_released_after(tmp_path):
    config = parse_config(tiny())
    seen = []

    def try_second_writer(_record):
        with pytest.raises(RunDirError, match=f"is in use: process {os.getpid()} is writing"):
            with RunDir(tmp_path).lock():
                pass
        seen.append(1)

    run_experiment(config, tmp_path, progress=False, on_round=try_second_writer)
    assert len(seen) == 3
    with RunDir(tmp_path).lock():  # free again
        pass


# --- 2. lost records --------------------------------------------------------------------------

@pytest.mark.parametrize("damage,named", [
    (lambda lines: [x for i, x in enumerate(lines) if i not in (2, 4, 5)], "rounds 2, 4-5"),
    (None, "rounds 0-7"),
], ids=["three-lines-deleted", "file-deleted"])
def test_lost_records_are_restored_from_the_checkpoint(tmp_path, capsys, damage, named):
    config = parse_config(tiny(train_args={"comm_round": 8}))
    run_experiment(config, tmp_path, progress=False)
    metrics = tmp_path / "metrics.jsonl"
    written = metrics.read_text()
    if damage is None:
        metrics.unlink()
    else:
        metrics.write_text("".join(damage(written.splitlines(keepends=True))))
    capsys.readouterr()
    summary = run_experiment(config, tmp_path, resume=True, progress=False)
    assert metrics.read_text() == written
    assert summary["rounds"] == 8
    assert (f"warning: {str(metrics)!r} lacked the records of {named}; restored from "
            f"checkpoint.pt") in capsys.readouterr().err


def test_lost_records_of_an_unfinished_run_are_restored_before_it_continues(tmp_path, capsys,
                                                                             monkeypatch):
    config = parse_config(tiny(train_args={"comm_round": 5}))
    real_round = Experiment.run_round

    def stop_in_round_three(self):
        if self.round == 3:
            raise KeyboardInterrupt
        return real_round(self)

    monkeypatch.setattr(Experiment, "run_round", stop_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path, progress=False)
    monkeypatch.setattr(Experiment, "run_round", real_round)
    metrics = tmp_path / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + lines[2])  # round 1 lost
    run_experiment(config, tmp_path, resume=True, progress=False)
    assert "lacked the record of round 1; restored" in capsys.readouterr().err
    assert metrics.read_text().splitlines(keepends=True)[:3] == lines
    assert without_times(records(tmp_path)) == without_times(list(Experiment(config).rounds()))


def test_records_that_are_not_the_checkpoints_are_refused(tmp_path):
    config = parse_config(tiny())
    run_experiment(config, tmp_path, progress=False)
    metrics = tmp_path / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    changed = json.loads(lines[1])
    changed["test_accuracy"] = 1.0
    for text in (lines[0] + json.dumps(changed) + "\n" + lines[2],  # a value changed
                 lines[0] + lines[1] + lines[1] + lines[2]):       # a round twice
        metrics.write_text(text)
        with pytest.raises(RunDirError, match=r"metrics.jsonl' line \d is not the record "
                                              r"checkpoint.pt holds for its round"):
            run_experiment(config, tmp_path, resume=True, progress=False)
        assert metrics.read_text() == text
    metrics.write_text("".join(lines))
    (tmp_path / "checkpoint.pt").unlink()
    with pytest.raises(RunDirError, match=r"checkpoint.pt is missing, so there is no state to "
                                          r"continue from \(metrics.jsonl holds the records of "
                                          r"rounds 0-2\); start again with --overwrite"):
        run_experiment(config, tmp_path, resume=True, progress=False)


# --- 3. a failed start writes nothing ---------------------------------------------------------

@pytest.mark.parametrize("bad,says", [
    ("model_args.model=nosuch", "unknown model 'nosuch'"),
    ("data_args.dataset=nosuch", "unknown dataset 'nosuch'"),
    ("train_args.client_num_in_total=5000", "num_clients=5000 must be in 1..2000"),
], ids=["model", "dataset", "data"])
def test_a_config_that_fails_its_checks_writes_nothing(tmp_path, capsys, bad, says):
    config = _write_config(tmp_path, tiny(train_args={"comm_round": 1}))
    for out in (tmp_path / "new", tmp_path):  # a new directory, and one that exists
        assert main(["run", str(config), "--out", str(out), "--quiet", "--set", bad]) == 2
        assert says in capsys.readouterr().err
        assert out == tmp_path or not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]
    assert main(["run", str(config), "--out", str(tmp_path / "new"), "--quiet"]) == 0


@pytest.mark.parametrize("resume", [False, True])
def test_a_directory_without_a_finished_round_is_reused(tmp_path, resume):
    """A run killed before its first round ends (or an older fedsec's failed start) leaves a
    config.yaml and nothing else."""
    config = _write_config(tmp_path, tiny(train_args={"comm_round": 1}))
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump({"model_args": {"model": "nosuch"}}))
    assert main(["run", str(config), "--out", str(out), "--quiet"]
                + ["--resume"] * resume) == 0
    assert RunDir(out).config() == parse_config(tiny(train_args={"comm_round": 1})).to_dict()
    assert len(records(out)) == 1


# --- 4. a damaged checkpoint ------------------------------------------------------------------

@pytest.mark.parametrize("damage", [
    lambda b: b[:len(b) // 2],
    lambda b: b"",
    lambda b: bytes(torch.randint(0, 256, (len(b),), generator=torch.Generator().manual_seed(0),
                                  dtype=torch.uint8).tolist()),
    None,  # a readable file that is not a fedsec checkpoint
], ids=["truncated", "empty", "garbage", "foreign"])
def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path, capsys, damage):
    config = _write_config(tmp_path, tiny())
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    checkpoint = out / "checkpoint.pt"
    if damage is None:
        torch.save({"weights": torch.zeros(3)}, checkpoint)
    else:
        checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedsec run: error: {str(checkpoint)!r} is damaged (")
    assert err.rstrip().endswith("so the run cannot continue; metrics.jsonl holds the records "
                                 "of rounds 0-2; start again with --overwrite, or choose "
                                 "another --out to keep this directory")
    assert main(["run", str(config), "--out", str(out), "--quiet", "--overwrite"]) == 0


# --- 5. resuming what is not there ------------------------------------------------------------

def test_resume_of_a_missing_run_is_refused(tmp_path, capsys):
    config = _write_config(tmp_path, tiny())
    assert main(["run", str(config), "--out", str(tmp_path / "typo"), "--resume"]) == 2
    assert (f"cannot resume {str(tmp_path / 'typo')!r}: it does not exist; check --out, or "
            f"leave out --resume to start a new run there") in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    assert main(["run", str(config), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "it holds no fedsec run (no config.yaml)" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []


# --- 6. Ctrl-C --------------------------------------------------------------------------------

def test_ctrl_c_stops_cleanly_and_resume_finishes_identically(tmp_path):
    config, out = _write_config(tmp_path, LONG), tmp_path / "run"
    proc = _start(config, out)
    _wait_for_records(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    match = re.fullmatch(rf"interrupted: rounds 0-(\d+) are saved in {re.escape(str(out))}; "
                         rf"continue with: fedsec run {re.escape(str(config))} --out "
                         rf"{re.escape(str(out))} --resume", err.strip())
    assert match, err
    assert RunDir(out).rounds_done() == int(match[1]) + 1 >= 2
    kept = (out / "metrics.jsonl").read_text().splitlines()
    assert main(["run", str(config), "--out", str(out), "--resume", "--quiet"]) == 0
    assert (out / "metrics.jsonl").read_text().splitlines()[:len(kept)] == kept
    assert without_times(records(out)) == _straight(yaml.safe_dump(LONG))


def test_ctrl_c_before_the_first_round_is_saved(tmp_path, capsys, monkeypatch):
    config = _write_config(tmp_path, tiny())

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Experiment, "run_round", interrupted)
    out = tmp_path / "run"
    try:
        code = main(["run", str(config), "--out", str(out), "--quiet",
                     "--set", "train_args.comm_round=2"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left `fedsec run` as a KeyboardInterrupt")
    assert code == 130
    assert capsys.readouterr().err == (
        f"interrupted before round 0 was saved in {out}; start again with: fedsec run "
        f"{config} --out {out} --set train_args.comm_round=2\n")


def test_ctrl_c_while_reading_the_config_is_a_line_not_a_traceback(tmp_path, capsys,
                                                                    monkeypatch):
    """Before the run starts (reading the config) nothing is saved: one line, exit 130."""
    import fedsec.fl

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fedsec.fl, "load_config", interrupted)
    code = main(["run", str(_write_config(tmp_path, tiny())), "--out", str(tmp_path / "run"),
                 "--quiet"])
    assert code == 130
    assert capsys.readouterr().err == "fedsec run: interrupted\n"
    assert not (tmp_path / "run").exists()
