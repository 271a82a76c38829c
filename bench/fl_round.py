"""Time FL rounds of the simulation: their parts, the main job on a quiet and a busy machine, and
the same experiment through Flower's simulation engine.

    python -m bench.fl_round                                  # every section
    python -m bench.fl_round --sections parts --models lr,cnn,lenet5 --clients 10,70
    python -m bench.fl_round --sections main_job,flower

Sections:
- ``parts``: per model and defense, one warm-up round, then ``--rounds`` timed rounds; each part
  is the median over them, from the rounds' own records: ``train_time_s`` (the clients' local
  training, one epoch each), ``aggregation_time_s`` (defense, aggregation and server step),
  ``eval_time_s`` (the 2,000 test digits) and ``round_time_s``; with client batching on
  ``auto``, and ``off`` beside it where auto batched the clients.
- ``main_job``: ``fedsec run`` (configs/default.yaml) as a user starts it, wall time and rounds
  per second, on a quiet machine, beside a busy loop holding one core, and beside a second
  fedsec job (both started and stopped here).
- ``flower``: the main job's task for ``--flower-rounds`` rounds in-process and through Flower's
  simulation engine (Ray) with ``FedSecStrategy`` (same clients, partitions, local training and
  defense; fedsec/integrations/flower/simulation.py): rounds per second after the first round
  (Ray's start-up excluded) and wall time, and the final accuracy of each. Needs the flower
  extra.
- ``fedml``: FedML's simulator, when the fedml package is installed (skipped with a note).

Results go to bench/results/fl_round.json, and Markdown tables are printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from fedsec.fl import Experiment, parse_config, resolve_config

DEFENSES = {"fedavg": {"enable_defense": False},
            "m-krum": {"enable_defense": True, "defense_type": "krum",
                       "byzantine_client_num": 1, "krum_param_m": 5},
            "median": {"enable_defense": True, "defense_type": "coordinate_wise_median"}}
PARTS = ("round_time_s", "train_time_s", "aggregation_time_s", "eval_time_s")
SECTIONS = ("parts", "main_job", "flower", "fedml")
FEDSEC_RUN = [sys.executable, "-m", "fedsec.cli", "run", "default", "--quiet"]


def time_case(model: str, clients: int, defense: str, rounds: int, batching: str) -> dict:
    experiment = Experiment(parse_config({
        "data_args": {"dataset": "digits", "partition_method": "hetero"},
        "model_args": {"model": model},
        "train_args": {"client_num_in_total": clients, "client_num_per_round": clients,
                       "comm_round": rounds + 1, "batch_size": 32, "learning_rate": 0.05,
                       "client_batching": batching},
        "defense_args": DEFENSES[defense]}))
    records = list(experiment.rounds())[1:]  # the first round warms up
    return {"model": model, "clients": clients, "defense": defense, "batching": batching,
            "batched": experiment.batching,
            "parameters": sum(v.numel() for v in experiment.global_model.values()),
            **{part: statistics.median(r[part] for r in records) for part in PARTS}}


def parts_section(args) -> list[dict]:
    """Each case with client batching on auto, and off too where auto batched."""
    rows = []
    for model in args.models.split(","):
        for clients in args.clients.split(","):
            for defense in args.defenses.split(","):
                rows.append(time_case(model, int(clients), defense, args.rounds, "auto"))
                if rows[-1]["batched"]:
                    rows.append(time_case(model, int(clients), defense, args.rounds, "off"))
    return rows


def _main_job(folder: Path) -> dict:
    """One `fedsec run` of the main job as a user starts it: wall time, and the rounds' own
    time from its records."""
    out = folder / "run"
    start = time.perf_counter()
    subprocess.run([*FEDSEC_RUN, "--out", str(out), "--overwrite"], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "rounds": summary["rounds"],
            "rounds_per_s": summary["rounds"] / summary["total_round_time_s"],
            "final_test_accuracy": summary["final_test_accuracy"]}


def main_job_section(_args) -> list[dict]:
    loads = {"quiet": None,
             "busy loop on one core": [sys.executable, "-c", "while True: pass"],
             "a second fedsec job": [*FEDSEC_RUN, "--set", "train_args.comm_round=1000000",
                                     "--out", "{folder}/other"]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _main_job(folder)  # warm the file cache and the package's bytecode
        for name, command in loads.items():
            load = None
            if command is not None:
                load = subprocess.Popen([part.format(folder=folder) for part in command],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(3.0)  # past the second job's start-up
            try:
                rows.append({"load": name, **_main_job(folder)})
            finally:
                if load is not None:
                    load.kill()
                    load.wait()
    quiet = rows[0]["wall_s"]
    for row in rows:
        row["vs_quiet"] = row["wall_s"] / quiet
    return rows


def flower_section(args) -> list[dict]:
    if importlib.util.find_spec("flwr") is None:
        return [{"note": "Flower is not installed (pip install \"fedsec[flower]\"); skipped"}]
    from fedsec.integrations.flower.simulation import run as run_flower

    raw = yaml.safe_load(resolve_config("default").read_text())
    raw["train_args"]["comm_round"] = args.flower_rounds
    start = time.perf_counter()
    experiment = Experiment(parse_config(raw))
    records = list(experiment.rounds())
    wall = time.perf_counter() - start
    fedsec_row = {"engine": "fedsec (in-process)", "rounds": len(records), "wall_s": wall,
                  "rounds_after_first_s": sum(r["round_time_s"] for r in records[1:]),
                  "final_test_accuracy": records[-1]["test_accuracy"]}
    flower_row = {"engine": "Flower simulation (Ray) + FedSecStrategy",
                  **run_flower(raw, args.flower_rounds)}
    rows = [fedsec_row, flower_row]
    for row in rows:
        row["rounds_per_s"] = (row["rounds"] - 1) / row["rounds_after_first_s"]
    flower_row["fedsec_speedup"] = fedsec_row["rounds_per_s"] / flower_row["rounds_per_s"]
    flower_row["fedsec_wall_speedup"] = flower_row["wall_s"] / fedsec_row["wall_s"]
    return rows


def fedml_section(_args) -> list[dict]:
    if importlib.util.find_spec("fedml") is None:
        return [{"note": "FedML is not installed (pip install fedml); its simulator was not "
                         "timed"}]
    return [{"note": "FedML is installed, but timing its simulator is not implemented"}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--models", default="lr,cnn")
    parser.add_argument("--clients", default="10,70")
    parser.add_argument("--defenses", default="fedavg,m-krum,median")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flower-rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fl_round.json"))
    args = parser.parse_args(argv)
    chosen = args.sections.split(",")
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    functions = {"parts": parts_section, "main_job": main_job_section,
                 "flower": flower_section, "fedml": fedml_section}
    results = {name: functions[name](args) for name in chosen}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from fedsec import build_info

    args.out.write_text(json.dumps({"torch": torch.__version__,
                                    "cpu_isa": build_info()["cpu_isa"],
                                    "command": " ".join(["python -m bench.fl_round",
                                                         *(sys.argv[1:] if argv is None
                                                           else argv)]),
                                    **results}, indent=2) + "\n")
    print(render(results))
    return 0


def render(results: dict) -> str:
    lines = []
    if "parts" in results:
        lines += ["| model | parameters | clients | defense | batching | round (s) | train (s) "
                  "| aggregation (ms) | eval (s) |", "|" + " --- |" * 9]
        lines += [f"| {r['model']} | {r['parameters']:,} | {r['clients']} | {r['defense']} | "
                  f"{r['batching']}{' (batched)' if r['batched'] else ''} | "
                  f"{r['round_time_s']:.3f} | {r['train_time_s']:.3f} | "
                  f"{r['aggregation_time_s'] * 1000:.2f} | {r['eval_time_s']:.3f} |"
                  for r in results["parts"]]
        lines.append("")
    if "main_job" in results:
        lines += ["| machine | wall (s) | rounds/s | x quiet | final accuracy |",
                  "|" + " --- |" * 5]
        lines += [f"| {r['load']} | {r['wall_s']:.2f} | {r['rounds_per_s']:.1f} | "
                  f"{r['vs_quiet']:.2f} | {r['final_test_accuracy']:.4f} |"
                  for r in results["main_job"]]
        lines.append("")
    for name in ("flower", "fedml"):
        rows = results.get(name, [])
        if rows and "note" in rows[0]:
            lines += [f"{name}: {rows[0]['note']}", ""]
        elif rows:
            lines += ["| engine | rounds | wall (s) | rounds/s after the first | final accuracy |",
                      "|" + " --- |" * 5]
            lines += [f"| {r['engine']} | {r['rounds']} | {r['wall_s']:.1f} | "
                      f"{r['rounds_per_s']:.2f} | {r['final_test_accuracy']:.4f} |" for r in rows]
            flower = rows[1]
            lines += ["", f"fedsec in-process: {flower['fedsec_speedup']:.1f}x Flower's rounds "
                          f"per second, {flower['fedsec_wall_speedup']:.1f}x in wall time", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
