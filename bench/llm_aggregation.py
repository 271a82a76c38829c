"""Aggregation at LLM scale: LoRA adapters of Pythia-1B in memory, and full models streamed from
safetensors checkpoints on disk.

    python -m bench.llm_aggregation                      # 7 and 50 clients' adapters; 7 x 1 GB files
    python -m bench.llm_aggregation --clients 7 --full-bytes 2e7 --repeats 2   # a quick check

- **adapters**: each client's update is LoRA r = 8 on query_key_value of Pythia-1B's 16 layers
  (hidden 2048: lora_A [8, 2048] and lora_B [6144, 8] per layer, 1,048,576 float32 numbers, as
  peft names them), state_dicts of seeded N(0, 1) tensors, the first f = max(1, n // 10) clients
  shifted by +3. Time (median of warm calls) and peak extra memory per rule, beside the floor
  (one read of the same numbers stacked, bench.aggregators' definition).
- **stream**: ``--full-clients`` checkpoints of ``--full-bytes`` bytes each, tensors of
  Pythia-1B's shapes (the embedding, then whole layers) written as safetensors files in
  ``--dir`` and removed afterwards. The disk's read speed is measured in the same run (the files
  read once, their pages first dropped from the page cache); each rule then runs on the paths,
  cold (pages dropped again) and warm, and reports its time, that time over one read of the
  files at the measured speed (``passes``: the distance rules read the data twice), and its
  peak extra memory against one output model plus one tensor per client.

Peak extra memory is the growth of the resident-set high-water mark over one call
(bench.aggregators.MEMORY_METHOD). Results go to ``--out`` as JSON, printed as they come.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

import fedsec

from .aggregators import (MEMORY_METHOD, cpu_sample, floor_seconds, others_share,
                          repeats_for, reset_peak_rss, timed, warm_up)

# Pythia-1B (EleutherAI/pythia-1b's config.json): hidden 2048, 16 layers, MLP 8192, vocabulary
# 50304.
HIDDEN, LAYERS, MLP, VOCAB = 2048, 16, 8192, 50304
LORA_RANK = 8
SHIFT = 3.0


def byzantine_count(n: int) -> int:
    return max(1, n // 10)


def rules(n: int) -> dict[str, Callable[[Any], Any]]:
    """The rules timed: Exp9's m-Krum (m = 2) beside the coordinate-wise and mean rules."""
    f = byzantine_count(n)
    return {"mean": fedsec.mean, "median": fedsec.median,
            "trimmed_mean": lambda u: fedsec.trimmed_mean(u, 0.1),
            "m_krum": lambda u: fedsec.krum(u, f, m=2),
            "geometric_median": lambda u: fedsec.geometric_median(u, tol=1e-6)}


# Rules reading the data twice (Gram matrix, then the combination), the others once.
PASSES = {"mean": 1, "median": 1, "trimmed_mean": 1, "m_krum": 2, "geometric_median": 2}


def adapter_shapes() -> dict[str, tuple[int, ...]]:
    prefix = "base_model.model.gpt_neox.layers.{}.attention.query_key_value"
    shapes = {}
    for layer in range(LAYERS):
        shapes[f"{prefix.format(layer)}.lora_A.default.weight"] = (LORA_RANK, HIDDEN)
        shapes[f"{prefix.format(layer)}.lora_B.default.weight"] = (3 * HIDDEN, LORA_RANK)
    return shapes


def full_model_shapes() -> dict[str, tuple[int, ...]]:
    """Pythia-1B's float tensors (GPT-NeoX), the embedding first, then layer after layer."""
    shapes = {"gpt_neox.embed_in.weight": (VOCAB, HIDDEN)}
    for layer in range(LAYERS):
        p = f"gpt_neox.layers.{layer}"
        shapes.update({
            f"{p}.input_layernorm.weight": (HIDDEN,), f"{p}.input_layernorm.bias": (HIDDEN,),
            f"{p}.post_attention_layernorm.weight": (HIDDEN,),
            f"{p}.post_attention_layernorm.bias": (HIDDEN,),
            f"{p}.attention.query_key_value.weight": (3 * HIDDEN, HIDDEN),
            f"{p}.attention.query_key_value.bias": (3 * HIDDEN,),
            f"{p}.attention.dense.weight": (HIDDEN, HIDDEN),
            f"{p}.attention.dense.bias": (HIDDEN,),
            f"{p}.mlp.dense_h_to_4h.weight": (MLP, HIDDEN), f"{p}.mlp.dense_h_to_4h.bias": (MLP,),
            f"{p}.mlp.dense_4h_to_h.weight": (HIDDEN, MLP), f"{p}.mlp.dense_4h_to_h.bias": (HIDDEN,)})
    shapes.update({"gpt_neox.final_layer_norm.weight": (HIDDEN,),
                   "gpt_neox.final_layer_norm.bias": (HIDDEN,), "embed_out.weight": (VOCAB, HIDDEN)})
    return shapes


def first_bytes(shapes: dict[str, tuple[int, ...]], budget: float) -> dict[str, tuple[int, ...]]:
    """The leading tensors of ``shapes`` that fit in ``budget`` float32 bytes (a tensor that
    does not fit is cut to its leading rows, so small budgets still hold something)."""
    out, left = {}, int(budget) // 4
    for key, shape in shapes.items():
        size = 1
        for s in shape:
            size *= s
        if size <= left:
            out[key], left = shape, left - size
        elif left >= (row := size // shape[0]):
            out[key] = (left // row, *shape[1:])
            break
        else:
            break
    return out


def client_state(shapes: dict[str, tuple[int, ...]], client: int, shifted: bool
                 ) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(client)
    return {k: torch.randn(s, generator=g) + (SHIFT if shifted else 0.0)
            for k, s in shapes.items()}


def measure_rule(fn: Callable[[], Any], opts: argparse.Namespace) -> dict[str, float]:
    """Peak extra memory of one call, then the median of warm calls."""
    read_peak = reset_peak_rss()
    start_rss = read_peak()
    result, first = warm_up(fn)
    growth = read_peak() - start_rss
    del result
    cpu = cpu_sample()
    seconds = timed(fn, repeats_for(first, opts))
    return {"seconds": seconds, "first_call_s": first, "peak_extra_bytes": growth,
            "others_cpu": others_share(cpu)}


def adapters_section(opts: argparse.Namespace, report: dict) -> None:
    shapes = adapter_shapes()
    numbers = sum(a * b for a, b in shapes.values())
    for n in opts.clients:
        f = byzantine_count(n)
        states = [client_state(shapes, c, c < f) for c in range(n)]
        stacked = torch.stack([torch.cat([s[k].reshape(-1) for k in shapes]) for s in states])
        floor = floor_seconds(stacked, opts)
        del stacked
        for rule, fn in rules(n).items():
            row = {"section": "adapters", "clients": n, "numbers_per_client": numbers,
                   "rule": rule, "floor_s": floor,
                   **measure_rule(lambda: fn(states), opts)}
            row["ratio"] = row["seconds"] / floor
            emit(report, row)
        del states


def drop_from_page_cache(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as file:
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def read_seconds(paths: list[Path]) -> float:
    """One cold sequential read of the files (their pages dropped first), in 64 MiB reads."""
    drop_from_page_cache(paths)
    buffer = bytearray(64 << 20)
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as file:
            while file.readinto(buffer):
                pass
    return time.perf_counter() - start


def stream_section(opts: argparse.Namespace, report: dict) -> None:
    from safetensors.torch import save_file

    shapes = first_bytes(full_model_shapes(), opts.full_bytes)
    n = opts.full_clients
    f = byzantine_count(n)
    folder = Path(tempfile.mkdtemp(prefix="fedsec-llm-bench-", dir=opts.dir))
    try:
        paths = []
        start = time.perf_counter()
        for c in range(n):
            paths.append(folder / f"client{c}.safetensors")
            save_file(client_state(shapes, c, c < f), str(paths[-1]))
        write_s = time.perf_counter() - start
        total = sum(p.stat().st_size for p in paths)
        read_s = read_seconds(paths)
        largest = max(4 * (s[0] * (s[1] if len(s) > 1 else 1)) for s in shapes.values())
        output = sum(4 * (s[0] * (s[1] if len(s) > 1 else 1)) for s in shapes.values())
        emit(report, {"section": "stream", "clients": n, "bytes_per_client": total // n,
                      "tensors_per_client": len(shapes), "write_s": write_s,
                      "disk_read_bytes_per_s": total / read_s,
                      "bound_bytes": output + n * largest})
        names = [str(p) for p in paths]
        for rule, fn in rules(n).items():
            for cache in ("cold", "warm"):
                if cache == "cold":
                    drop_from_page_cache(paths)
                read_peak = reset_peak_rss()
                start_rss = read_peak()
                start = time.perf_counter()
                result = fn(names)
                seconds = time.perf_counter() - start
                growth = read_peak() - start_rss
                del result
                emit(report, {"section": "stream", "clients": n, "rule": rule, "cache": cache,
                              "seconds": seconds, "passes": PASSES[rule],
                              "over_disk_read": seconds / read_s,
                              "peak_extra_bytes": growth,
                              "peak_over_bound": growth / (output + n * largest)})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def emit(report: dict, row: dict) -> None:
    report["rows"].append(row)
    print(json.dumps(row), flush=True)
    if report["out"]:
        Path(report["out"]).parent.mkdir(parents=True, exist_ok=True)
        Path(report["out"]).write_text(json.dumps(report, indent=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.llm_aggregation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", type=lambda s: s.split(","), default=["adapters", "stream"])
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[7, 50],
                   help="client counts of the adapters section")
    p.add_argument("--full-clients", type=int, default=7, help="checkpoints of the stream section")
    p.add_argument("--full-bytes", type=float, default=1e9, help="bytes per checkpoint")
    p.add_argument("--dir", default=None, help="where the checkpoints are written (default: "
                                               "the system's temporary folder)")
    p.add_argument("--repeats", type=int, default=5, help="most warm calls timed per rule")
    p.add_argument("--budget-s", type=float, default=3.0, help="time for a rule's warm calls")
    p.add_argument("--out", default="bench/results/llm_aggregation.json")
    opts = p.parse_args(argv)
    if min(opts.clients + [opts.full_clients]) < 5:
        p.error("m-Krum with f = 1 needs at least 5 clients (n > 2f + 2)")
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    report = {"source": "bench/llm_aggregation.py", "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(),
              "threads": fedsec.build_info().get("num_threads"), "memory_method": MEMORY_METHOD, "options": vars(opts), "rows": [],
              "out": opts.out}
    if "adapters" in opts.sections:
        adapters_section(opts, report)
    if "stream" in opts.sections:
        stream_section(opts, report)


if __name__ == "__main__":
    main()
