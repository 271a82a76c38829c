"""A run's output directory, written so that nothing is lost when a run is killed:

    config.yaml     the resolved config (every default spelled out)
    metrics.jsonl   one JSON record per completed round, appended as the round ends
    checkpoint.pt   the state after the last completed round and every record so far
                    (replaced atomically)
    summary.json    the final summary, once the last round is done
    accuracy.png    test accuracy per round
    lock            the lock of the process writing the directory, with its PID

One writer at a time: a run holds an exclusive ``fcntl.flock`` on ``lock`` for its whole life
and writes its PID into it, and a second writer is refused with that PID. The kernel releases
the lock when its process ends, however it ends (even SIGKILL), so the lock of a dead process
is simply taken over: a PID in the file is only meaningful while the lock is held. The lock
file is never deleted (deleting it could let two processes each hold a lock on a different
file of the same name).

Nothing is written before the config and its data are checked (``check`` reads only; the
runner builds the experiment, then locks and ``open``s), and a directory holding no finished
round is reused as if it were empty, so a failed start never blocks the next one. Resuming a
directory that holds no run is refused (a mistyped --out must not start a fresh run).

After round r the checkpoint is written first, then the record is appended. The checkpoint
carries every record so far (records are small next to a model), so metrics.jsonl can always
be restored from it: on resume, a record the kill left unwritten (the last round's) is
appended, a last line cut off mid-write is dropped and restored, and records lost in any
other way (lines or the whole file deleted) are restored too, with a warning on stderr naming
them. Restoring is sound because the checkpoint's records are exactly the lines fedsec wrote;
refusing would leave the user nothing better to do. Lines that are present are only
rewritten (as they were) when a gap before them must be filled; a line that is not the
checkpoint's record of its round (changed, duplicated, reordered, or ahead of the checkpoint)
is an error, since fedsec cannot know which file is right. So is a checkpoint that cannot be
read: the error names it and the rounds metrics.jsonl still holds.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
PLOT = "accuracy.png"
LOCK = "lock"
FILES = (CONFIG, METRICS, CHECKPOINT, SUMMARY, PLOT)  # a run's files (the lock is not one)

_START_AGAIN = "start again with --overwrite, or choose another --out to keep this directory"


class RunDirError(ValueError):
    """The output directory cannot be used as asked (the message says what to do)."""


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: list[dict[str, Any]] = []  # what the next checkpoint carries

    def file(self, name: str) -> Path:
        return self.path / name

    def holds_run(self) -> bool:
        return self.file(CONFIG).exists()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's lock (creating the directory) until the block ends; raises
        RunDirError, naming its PID, while another process holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.file(LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's PID
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RunDirError(f"{str(self.path)!r} is in use: process {holder} is writing "
                                  f"it (it holds {str(path)!r}); wait for that run to end or "
                                  f"stop it, or choose another --out") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def check(self, config: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
        """Refuse a run of ``config`` (its ``to_dict()``) that this directory cannot take,
        reading only: before the data loads, and again in ``open``."""
        where = str(self.path)
        if resume and overwrite:
            raise RunDirError(f"--resume continues the run in {where!r} and --overwrite "
                              f"deletes it: pass only one of them")
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"output path {where!r} exists and is not a directory; choose "
                              f"another --out")
        if resume and not self.holds_run():
            state = ("does not exist" if not self.path.exists()
                     else f"holds no fedsec run (no {CONFIG})")
            raise RunDirError(f"cannot resume {where!r}: it {state}; check --out, or leave "
                              f"out --resume to start a new run there")
        if overwrite or not self._has_rounds():
            return
        if not resume:
            raise RunDirError(f"{where!r} already holds a run ({self.rounds_done()} rounds "
                              f"done); pass --resume to continue it, --overwrite to start "
                              f"again, or choose another --out")
        stored = yaml.safe_load(self.file(CONFIG).read_text())
        if stored != config:
            raise RunDirError(f"cannot resume {where!r}: the config differs from its "
                              f"config.yaml at {_first_difference(stored, config)}; resume "
                              f"with the run's config and --set options, or {_START_AGAIN}")

    def open(self, config: dict[str, Any], *, resume: bool, overwrite: bool
             ) -> dict[str, Any] | None:
        """Prepare the directory (its ``lock()`` held) for a run of ``config``; returns the
        checkpoint to continue from (None: start at round 0)."""
        self.check(config, resume=resume, overwrite=overwrite)
        if resume and self._has_rounds():
            return self._reconcile()
        self.path.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            self.file(name).unlink(missing_ok=True)
        _atomic_write_text(self.file(CONFIG), yaml.safe_dump(config, sort_keys=False))
        self._records = []
        return None

    def _has_rounds(self) -> bool:
        return self.file(CHECKPOINT).exists() or bool(self.records())

    def rounds_done(self) -> int:
        """Rounds finished: those of the checkpoint (a resume restores any missing record),
        else the records'."""
        checkpoint = self.load_checkpoint()
        return checkpoint["round"] + 1 if checkpoint is not None else len(self.records())

    def _reconcile(self) -> dict[str, Any]:
        """The checkpoint to resume from, metrics.jsonl made to hold exactly its records."""
        metrics = str(self.file(METRICS))
        checkpoint = self.load_checkpoint()
        records = self.records(drop_torn=True)
        if checkpoint is None:
            raise RunDirError(f"cannot resume {str(self.path)!r}: {CHECKPOINT} is missing, so "
                              f"there is no state to continue from ({METRICS} holds "
                              f"{_rounds(records)}); {_START_AGAIN}")
        saved, done = checkpoint["records"], checkpoint["round"]
        present: list[int] = []
        for line, record in enumerate(records, 1):
            r = record.get("round") if isinstance(record, dict) else None
            if isinstance(r, int) and r > done:
                raise RunDirError(f"{metrics!r} has round {r} but the checkpoint only round "
                                  f"{done}: the files were not written by fedsec in this "
                                  f"order; {_START_AGAIN}")
            if (not isinstance(r, int) or r < 0 or (present and r <= present[-1])
                    or json.dumps(record) != json.dumps(saved[r])):
                raise RunDirError(f"{metrics!r} line {line} is not the record {CHECKPOINT} "
                                  f"holds for its round (changed, duplicated or out of order: "
                                  f"written by another run?); {_START_AGAIN}")
            present.append(r)
        if len(present) == done + 1:
            return checkpoint
        missing = sorted(set(range(done + 1)) - set(present))
        if present == list(range(len(present))):  # only the end is missing: keep the lines
            self._append(*saved[len(present):])
        else:
            _atomic_write_text(self.file(METRICS), "".join(json.dumps(r) + "\n" for r in saved))
        if missing != [done]:  # the last round's record alone is save_round's kill window
            print(f"warning: {metrics!r} lacked {_records_of(missing)}; restored from "
                  f"{CHECKPOINT}", file=sys.stderr)
        return checkpoint

    def records(self, *, drop_torn: bool = False) -> list[dict[str, Any]]:
        """The completed rounds' records; with ``drop_torn``, a last line cut off by a kill is
        removed from the file."""
        path = self.file(METRICS)
        if not path.exists():
            return []
        lines = path.read_text().splitlines(keepends=True)
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines) - 1:
                    raise RunDirError(f"{str(path)!r} line {i + 1} is not JSON; {_START_AGAIN}"
                                      ) from None
                if drop_torn:
                    with path.open("r+") as f:
                        f.truncate(sum(len(x.encode()) for x in lines[:i]))
        return out

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint (None if there is none yet), keeping its records for the next
        ``save_round``; raises RunDirError if it is damaged."""
        path = self.file(CHECKPOINT)
        if not path.exists():
            return None
        try:
            state = torch.load(path, weights_only=True)
        except Exception as exc:  # damaged bytes raise a dozen kinds of error in torch.load
            # torch's first sentence only: its further advice (weights_only=False) is unsafe
            said = str(exc).partition("\n")[0].partition(". ")[0]
            raise self._damaged(f"{path.stat().st_size} bytes; {type(exc).__name__}"
                                + (f": {said}" if said else "")) from None
        records = state.get("records") if isinstance(state, dict) else None
        if not (isinstance(records, list) and records
                and [r.get("round") if isinstance(r, dict) else None for r in records]
                == list(range(len(records))) and state.get("round") == len(records) - 1):
            raise self._damaged("its round and records are not those fedsec writes")
        self._records = records
        return state

    def _damaged(self, reason: str) -> RunDirError:
        try:
            kept = f"{METRICS} holds {_rounds(self.records())}"
        except RunDirError:
            kept = f"{METRICS} is damaged too"
        return RunDirError(f"{str(self.file(CHECKPOINT))!r} is damaged ({reason}), so the run "
                           f"cannot continue; {kept}; {_START_AGAIN}")

    def save_round(self, checkpoint: dict[str, Any], record: dict[str, Any]) -> None:
        """Persist a finished round: the checkpoint (holding every record up to ``record``),
        then the record."""
        records = [*self._records, record]
        tmp = self.file(CHECKPOINT + ".tmp")
        torch.save({**checkpoint, "records": records}, tmp)
        os.replace(tmp, self.file(CHECKPOINT))
        self._records = records
        self._append(record)

    def _append(self, *records: dict[str, Any]) -> None:
        with self.file(METRICS).open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())

    def write_summary(self, summary: dict[str, Any]) -> None:
        _atomic_write_text(self.file(SUMMARY), json.dumps(summary, indent=2) + "\n")

    def config(self) -> dict[str, Any]:
        if not self.holds_run():
            raise RunDirError(f"{str(self.path)!r} holds no fedsec run (no {CONFIG})")
        return yaml.safe_load(self.file(CONFIG).read_text())


def _rounds(records: list[dict[str, Any]]) -> str:
    return _records_of([r.get("round") if isinstance(r, dict) else None for r in records])


def _records_of(rounds: list[Any]) -> str:
    if not rounds:
        return "no round's record"
    many = "s" if len(rounds) > 1 else ""
    return f"the record{many} of round{many} {_ranges(rounds)}"


def _ranges(rounds: list[Any]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` as ``0-2, 5, 7-8``."""
    out: list[list[Any]] = []
    for r in rounds:
        if out and isinstance(r, int) and out[-1][1] == r - 1:
            out[-1][1] = r
        else:
            out.append([r, r])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key, "<missing>") != b.get(key, "<missing>"):
                return _first_difference(a.get(key, "<missing>"), b.get(key, "<missing>"),
                                         f"{where}.{key}" if where else str(key))
    return f"{where}: {a!r} in the run, {b!r} now"
