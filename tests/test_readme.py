"""Every code block of README.md runs as written.

The python blocks of "Using fedsec with Flower" and "Coming from FedML" run in test_flower.py and
test_fedml_facade.py (beside the integration they show); the drop-in block and the `fedsec`
command lines run here; the first screen's install commands are what .ci/run executes. A block
in any other section fails `test_every_block_has_a_runner` until a test runs it.
"""
from __future__ import annotations

import importlib
import re
import shlex
import sys
from pathlib import Path

import torch

import yaml

from fedsec.cli import main
from fedsec.fl import parse_config, run_experiment

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Section ("" is the first screen) -> where its blocks run.
RUNNERS = {
    "": ".ci/run (the install and test commands, in a fresh venv)",
    "Experiments": "test_experiments_block_runs",
    "Drop-in aggregation": "test_dropin_block_runs",
    "Attacks and defenses": "test_security_yaml_block_runs",
    "Using fedsec with Flower": "test_flower.py::test_readme_flower_example_runs",
    "Coming from FedML": "test_fedml_facade.py",
    "Benchmark": "test_benchmark_block_parses",
}


def _sections() -> dict[str, str]:
    parts = re.split(r"^## (.+)\n", README, flags=re.M)
    return {"": parts[0], **dict(zip(parts[1::2], parts[2::2]))}


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _sections()[section], re.S)


def _commands(block: str) -> list[list[str]]:
    """The command lines of a bash block, comments dropped."""
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if shlex.split(line, comments=True)]


def test_every_block_has_a_runner():
    with_code = [name for name, text in _sections().items() if "```" in text]
    assert with_code and set(with_code) <= set(RUNNERS), \
        f"README sections with code that no test runs: {set(with_code) - set(RUNNERS)}"


def test_dropin_block_runs():
    (code,) = _blocks("Drop-in aggregation", "python")
    namespace: dict = {"__name__": "readme_dropin"}
    exec(compile(code, "README.md (Drop-in aggregation)", "exec"), namespace)
    updates, info = namespace["updates"], namespace["info"]
    # multi-Krum leaves the Byzantine client out, RFA down-weights it.
    assert float(namespace["g"].abs().max()) < 10.0
    assert info.coefficients[7] < 0.5 / len(updates)
    assert set(namespace["sd"]) == {"weight", "bias"}
    assert namespace["sd"]["weight"].shape == torch.Size([10, 784])


def test_security_yaml_block_runs(tmp_path):
    """The two YAML lines, as a config's sections, switch on their attack and defense."""
    (block,) = _blocks("Attacks and defenses", "yaml")
    config = parse_config({**yaml.safe_load(block), "train_args": {"comm_round": 2}})
    assert (config.attack.cls.name, config.defense.cls.name) == ("byzantine", "krum")
    summary = run_experiment(config, tmp_path / "run", progress=False)
    assert summary["rounds"] == 2


def test_experiments_block_runs(tmp_path, monkeypatch):
    """The main job of the first screen, then the block's commands in order (the plot uses the
    main job's run), in a fresh folder with the shipped configs beside it."""
    (block,) = _blocks("Experiments", "bash")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    for command in [["fedsec", "run"], *_commands(block)]:
        assert command[0] == "fedsec", command
        assert main(command[1:] + ["--quiet"] * (command[1] in ("run", "matrix"))) == 0, command
    assert (tmp_path / "comparison.png").stat().st_size > 0
    for run in ("no-defense", "clean"):
        assert (tmp_path / "runs" / run / "summary.json").exists()
    assert (tmp_path / "results" / "exp3" / "report.md").exists()


def test_benchmark_block_parses():
    """The benchmark commands take minutes and write bench/results/, so they are not run in
    tests; their arguments must still parse."""
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # bench/ lives beside the package, not inside it
    bench = importlib.import_module("bench.aggregators")
    (block,) = _blocks("Benchmark", "bash")
    for command in _commands(block):
        assert command[:3] == ["python", "-m", "bench.aggregators"], command
        args = bench.parse_args(command[3:])
        assert args.out == "bench/results/aggregators.json"
