"""`fedsec matrix`: every cell x seed of a matrix as a resumable `fedsec run`, with one progress
bar for the whole sweep, then the table, figures and report.

Runs live in ``OUT/cells/<cell>/seed<k>/``. A finished run (its summary.json exists) is
skipped, a started one resumed from its last round, so a killed sweep continues where it
stopped. With ``jobs > 1`` runs go to that many worker processes, each with its share of
the cores (fedsec/threads.py).
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, wait, FIRST_COMPLETED
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from ..fl.run_dir import SUMMARY, RunDir
from ..threads import ENV as THREADS_ENV, worker_budget
from ..fl.runner import run_experiment
from .config import Cell, MatrixConfig
from .report import write_report
from .results import CellResult, SeedResult


@dataclass(frozen=True)
class Job:
    cell: Cell
    seed: int
    out: Path

    @property
    def rounds(self) -> int:
        return self.cell.config(self.seed).train.comm_round

    def done(self) -> bool:
        return (self.out / SUMMARY).exists()

    def rounds_done(self) -> int:
        return len(RunDir(self.out).records()) if RunDir(self.out).holds_run() else 0


def jobs_of(matrix: MatrixConfig, out: Path, seeds: int) -> list[Job]:
    return [Job(cell, seed, out / "cells" / cell.name / f"seed{seed}")
            for cell in matrix.cells for seed in range(seeds)]


def run_matrix(matrix: MatrixConfig, out: str | os.PathLike, *, seeds: int | None = None,
               jobs: int = 1, progress: bool = True) -> list[CellResult]:
    """Run the missing runs of ``matrix`` into ``out`` and write its report; returns the
    per-cell results."""
    out = Path(out)
    seeds = matrix.seeds if seeds is None else seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} must be an integer >= 1 (None: the matrix's "
                         f"{matrix.seeds})")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be an integer >= 1")
    todo = jobs_of(matrix, out, seeds)
    pending = [j for j in todo if not j.done()]
    total = sum(j.rounds for j in todo)
    initial = sum(j.rounds if j.done() else j.rounds_done() for j in todo)
    with tqdm(total=total, initial=initial, desc=matrix.name, unit="round", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as bar:
        bar.set_postfix_str(f"{len(todo) - len(pending)}/{len(todo)} runs done")
        if jobs == 1:
            for job in pending:
                _run_job(job, lambda _: bar.update(1))
                bar.set_postfix_str(f"{sum(j.done() for j in todo)}/{len(todo)} runs done")
        else:
            _run_parallel(pending, jobs, bar, todo)
    results = [CellResult(cell, tuple(SeedResult.read(j.seed, RunDir(j.out))
                                      for j in todo if j.cell is cell))
               for cell in matrix.cells]
    write_report(matrix, results, out, seeds)
    return results


def _run_job(job: Job, on_round) -> None:
    try:
        # no per-run figure: the matrix draws its own, and a figure is a fifth of a small run
        run_experiment(job.cell.config(job.seed), job.out, resume=RunDir(job.out).holds_run(),
                       progress=False, plot=False, on_round=on_round)
    except ValueError as exc:
        raise ValueError(f"cell {job.cell.label}, seed {job.seed} ({job.out}): {exc}") from exc


_ticks = None  # a worker's queue of finished rounds, set by _start_worker
RUNS_PER_WORKER = 25


def _start_worker(parent: int, ticks, threads: int) -> None:
    """Worker initializer: its share of the cores, the queue its rounds are ticked on, and an
    exit as soon as the sweep's process is gone (killed, even by SIGKILL), so that no orphan
    goes on training and writing into a run directory that the next sweep resumes (the run's
    checkpoint is written atomically: an exit mid-round loses only that round)."""
    global _ticks
    _ticks = ticks
    os.environ[THREADS_ENV] = str(threads)  # read by fedsec.threads for every pool

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker(job: Job) -> None:
    """One run in a worker process, a tick per finished round."""
    _run_job(job, lambda _: _ticks.put(1))


def _run_parallel(pending: list[Job], jobs: int, bar: tqdm, todo: list[Job]) -> None:
    """The jobs on ``jobs`` worker processes, fresh ones for every RUNS_PER_WORKER runs each: a
    worker's resident memory grows over hundreds of runs (6 GB after about 600 small ones in
    the all-against-all sweep), and a new pool costs a second of imports. (The pool's own
    max_tasks_per_child hung here, Python 3.11.7, when it replaced a worker.)"""
    context = get_context("spawn")  # no fork of a process holding torch's thread pools
    # A plain queue handed over at start-up: no manager process, which would outlive a
    # killed sweep.
    ticks = context.Queue()
    chunk = jobs * RUNS_PER_WORKER
    for first in range(0, len(pending), chunk):
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                 initargs=(os.getpid(), ticks, worker_budget(jobs))) as pool:
            remaining = {pool.submit(_worker, job) for job in pending[first:first + chunk]}
            while remaining:
                finished, remaining = wait(remaining, timeout=0.2,
                                           return_when=FIRST_COMPLETED)
                _drain(ticks, bar)
                for future in finished:
                    future.result()  # a failed run raises here, its cell named
                bar.set_postfix_str(f"{sum(j.done() for j in todo)}/{len(todo)} runs done")
    _drain(ticks, bar)


def _drain(ticks, bar: tqdm) -> None:
    while True:
        try:
            bar.update(ticks.get_nowait())
        except queue.Empty:
            return
