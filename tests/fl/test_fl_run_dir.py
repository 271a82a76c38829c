"""The run directory: a new run, a conflict, resuming with another config, and the kill
windows (after the checkpoint but before the record; a record cut off mid-line)."""
from __future__ import annotations

import json

import pytest
import torch

from fedsec.fl.run_dir import METRICS, RunDir, RunDirError

CONFIG = {"train_args": {"comm_round": 3, "learning_rate": 0.1}, "attack_args": {}}


def _checkpoint(r):
    return {"round": r, "global_model": {"w": torch.full((2,), float(r))}}


def _drop_last_line(path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def test_new_run_writes_the_config_and_returns_no_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.open(CONFIG, resume=False, overwrite=False) is None
    assert run.config() == CONFIG and run.records() == []


def test_rounds_are_appended_and_checkpointed(tmp_path):
    run = RunDir(tmp_path)
    run.open(CONFIG, resume=False, overwrite=False)
    for r in range(2):
        run.save_round(_checkpoint(r), {"round": r, "test_accuracy": 0.5 + r})
    assert [x["round"] for x in run.records()] == [0, 1]
    ckpt = run.load_checkpoint()
    assert ckpt["round"] == 1 and [r["test_accuracy"] for r in ckpt["records"]] == [0.5, 1.5]


def test_an_existing_run_is_never_silently_replaced(tmp_path):
    run = RunDir(tmp_path)
    run.open(CONFIG, resume=False, overwrite=False)
    run.save_round(_checkpoint(0), {"round": 0})
    with pytest.raises(RunDirError, match=r"already holds a run \(1 rounds done\); pass "
                                          r"--resume to continue it, --overwrite"):
        RunDir(tmp_path).open(CONFIG, resume=False, overwrite=False)
    assert RunDir(tmp_path).open(CONFIG, resume=False, overwrite=True) is None
    assert RunDir(tmp_path).records() == []


def test_resume_with_another_config_names_the_difference(tmp_path):
    run = RunDir(tmp_path)
    run.open(CONFIG, resume=False, overwrite=False)
    run.save_round(_checkpoint(0), {"round": 0})
    other = {"train_args": {"comm_round": 3, "learning_rate": 0.2}, "attack_args": {}}
    with pytest.raises(RunDirError, match=r"train_args.learning_rate: 0.1 in the run, 0.2 now"):
        RunDir(tmp_path).open(other, resume=True, overwrite=False)


def test_kill_between_checkpoint_and_record_restores_the_record(tmp_path):
    run = RunDir(tmp_path)
    run.open(CONFIG, resume=False, overwrite=False)
    run.save_round(_checkpoint(0), {"round": 0, "test_accuracy": 0.25})
    run.save_round(_checkpoint(1), {"round": 1, "test_accuracy": 0.75})
    # Round 1 was checkpointed, then the process died before appending its record.
    _drop_last_line(tmp_path / METRICS)
    ckpt = RunDir(tmp_path).open(CONFIG, resume=True, overwrite=False)
    assert ckpt["round"] == 1
    assert [r["test_accuracy"] for r in RunDir(tmp_path).records()] == [0.25, 0.75]


def test_a_record_cut_off_mid_line_is_replaced_from_the_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    run.open(CONFIG, resume=False, overwrite=False)
    run.save_round(_checkpoint(0), {"round": 0, "x": 1})
    run.save_round(_checkpoint(1), {"round": 1, "x": 2})
    _drop_last_line(tmp_path / METRICS)
    with (tmp_path / METRICS).open("a") as f:
        f.write('{"round": 1, "x"')  # the kill came mid-write
    RunDir(tmp_path).open(CONFIG, resume=True, overwrite=False)
    lines = (tmp_path / METRICS).read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"round": 0, "x": 1}, {"round": 1, "x": 2}]


def test_records_ahead_of_the_checkpoint_are_an_error(tmp_path):
    run = RunDir(tmp_path)
    run.open(CONFIG, resume=False, overwrite=False)
    run.save_round(_checkpoint(0), {"round": 0})
    with (tmp_path / METRICS).open("a") as f:
        f.write(json.dumps({"round": 1}) + "\n")
    with pytest.raises(RunDirError, match="has round 1 but the checkpoint only round 0"):
        RunDir(tmp_path).open(CONFIG, resume=True, overwrite=False)


def test_a_file_in_place_of_the_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        RunDir(tmp_path / "f").open(CONFIG, resume=False, overwrite=False)
    with pytest.raises(RunDirError, match="holds no fedsec run"):
        RunDir(tmp_path).config()
