"""Per-step cost of local training against torch's intra-op threads, for every shipped model,
on a quiet machine and with cores kept busy by a background process (started and stopped here).

    python -m bench.threads                      # every model, 1..all cores, quiet and busy
    python -m bench.threads --models lr,cnn --steps 30

One step is what a client does per batch: forward, cross-entropy, backward, SGD step, on a batch
of 32 (the shipped configs' size range: 16 to 32). Each case warms up, then reports the median
of ``--steps`` timed steps. "busy" runs a pure-Python busy loop on one core beside the bench
(what another job on a laptop or a shared server does). This is the measurement behind the
thread rule of fedsec/threads.py; results go to bench/results/threads.json and a Markdown table
is printed.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fedsec.models import build_model, model_task
from fedsec.threads import available_cores

# (model, input shape, classes, options): the shapes the shipped datasets give each model.
CASES = {
    "lr": ((1, 28, 28), 10, {}),
    "cnn": ((1, 28, 28), 10, {}),
    "lenet5": ((1, 28, 28), 10, {}),
    "resnet20": ((3, 32, 32), 10, {}),
    "bilstm": ((80,), 80, {}),
    "transformer": ((80,), 80, {}),
}
BATCH = 32


def _busy_loop(stop) -> None:
    while not stop.is_set():
        pass


def step_time(model_name: str, threads: int, steps: int) -> float:
    """Median seconds of one training step of ``model_name`` with ``threads`` intra-op
    threads."""
    shape, classes, options = CASES[model_name]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_name, input_shape=shape, num_classes=classes, **options)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if len(shape) == 1:  # token sequences; a language model has a target at every position
        x = torch.randint(0, classes, (BATCH, *shape))
        targets = shape if model_task(model_name) == "language_model" else ()
        y = torch.randint(0, classes, (BATCH, *targets))
    else:
        x, y = torch.randn(BATCH, *shape), torch.randint(0, classes, (BATCH,))

    def one() -> float:
        start = time.perf_counter()
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    for _ in range(3):
        one()
    return statistics.median(one() for _ in range(steps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/threads.json"))
    args = parser.parse_args(argv)
    cores = available_cores()
    counts = sorted({1, cores} | ({2} if cores > 2 else set()))
    rows = []
    for load in ("quiet", "busy"):
        stop = multiprocessing.Event()
        busy = (multiprocessing.Process(target=_busy_loop, args=(stop,), daemon=True)
                if load == "busy" else None)
        if busy is not None:
            busy.start()
            time.sleep(0.5)
        try:
            for name in args.models.split(","):
                times = {t: step_time(name, t, args.steps) for t in counts}
                rows.append({"model": name, "load": load,
                             "step_ms": {str(t): 1e3 * s for t, s in times.items()}})
                print(name, load, {t: f"{1e3 * s:.2f} ms" for t, s in times.items()},
                      flush=True)
        finally:
            if busy is not None:
                stop.set()
                busy.join()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch": torch.__version__, "cores": cores,
                                    "cpu_count": os.cpu_count(), "batch": BATCH,
                                    "rows": rows}, indent=2) + "\n")
    header = " | ".join(f"{t} thread{'s' if t > 1 else ''} (ms)" for t in counts)
    print(f"| model | load | {header} |")
    print("|" + " --- |" * (2 + len(counts)))
    for r in rows:
        cells = " | ".join(f"{r['step_ms'][str(t)]:.2f}" for t in counts)
        print(f"| {r['model']} | {r['load']} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
