"""fedsec: a federated-learning security benchmark with a native robust-aggregation core.

Runs FL experiments with attacks and defenses injected at the stages of training (FedML-style
YAML), sweeps attack x defense matrices over seeds, and checks its C++/CUDA aggregators against
float64 references."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _info(args: argparse.Namespace) -> int:
    from .aggregation.backends.build import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"fedsec {info['version']}")
    if not info["native"]:
        print(f"native core: not loaded ({info['native_error']}); aggregation runs on torch")
        return 0
    count = info["num_threads"]
    print(f"native core: loaded; CPU kernels {info['cpu_isa']} (this processor runs "
          f"{', '.join(info['cpu_isas'])}), {count} thread{'s' if count != 1 else ''}")
    if not info["cuda_built"]:
        print("CUDA: not built into this installation (rebuild with nvcc on the PATH, or "
              "FEDSEC_CUDA=ON, for GPU kernels)")
    elif info["cuda_devices"]:
        print(f"CUDA: built; {info['cuda_devices']} usable device(s)")
    else:
        print(f"CUDA: built, but no usable GPU: {_plain_cuda_status(info['cuda_status'])}")
    return 0


def _plain_cuda_status(status: str) -> str:
    """The CUDA runtime's reason in plain words, the runtime's own text beside it."""
    plain = {"cudaErrorNoDevice": "no GPU found",
             "cudaErrorInsufficientDriver": "no CUDA driver (or one too old for CUDA 13)"}
    name = status.split(":", 1)[0]
    return f"{plain[name]} ({status})" if name in plain else status


def _selftest(args: argparse.Namespace) -> int:
    from .aggregation.selftest import run_selftest

    return 0 if run_selftest(quick=args.quick) else 1


def _list(_: argparse.Namespace) -> int:
    import dataclasses

    from .params import bounds_of
    from .security import Attack, Defense
    from .security.registry import names, resolve

    for base, title in ((Attack, "attacks (attack_type)"), (Defense, "defenses (defense_type)")):
        print(title)
        for name, aliases in names(base).items():
            cls = resolve(base, name)
            stages = ", ".join(sorted(s.value for s in cls.stages))
            also = f" (also: {', '.join(aliases)})" if aliases else ""
            print(f"  {name}{also}  [{stages}]")
            if getattr(cls, "knowledge", ""):
                print(f"      knowledge: {cls.knowledge}")
            for f in dataclasses.fields(cls.Params):
                default = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
                allowed = bounds_of(f).describe()
                print(f"      {f.name} = {default!r}" + (f"  ({allowed})" if allowed else ""))
                if f.metadata.get("doc"):
                    print(f"          {f.metadata['doc']}")
    _list_models_and_data()
    return 0


def _list_models_and_data() -> None:
    from .data import DATASETS
    from .models.registry import families

    print("models (model_args.model; options beside it)")
    for family in families():
        also = f" (also: {', '.join(family.aliases)})" if family.aliases else ""
        print(f"  {family.name}{also}  [{family.task}]")
        print(f"      {family.description}")
        for key, (default, allowed) in family.options_and_bounds().items():
            print(f"      {key} = {default!r}" + (f"  ({allowed})" if allowed else ""))
    print("datasets (data_args.dataset)")
    for name, description in DATASETS.items():
        print(f"  {name}: {description}")


def _run(args: argparse.Namespace) -> int:
    import shlex

    from .fl import RunDir, load_config, resolve_config, run_experiment

    path = resolve_config(args.config)
    config = load_config(path, args.set)
    out = args.out or str(Path("runs") / path.stem)
    try:
        summary = run_experiment(config, out, resume=args.resume, overwrite=args.overwrite,
                                 progress=not args.quiet)
    except KeyboardInterrupt:  # Ctrl-C: every finished round is already on disk
        again = shlex.join(["fedsec", "run", args.config, "--out", out,
                            *(part for item in args.set for part in ("--set", item))])
        done = RunDir(out).rounds_done()
        if done:
            print(f"interrupted: rounds 0-{done - 1} are saved in {out}; continue with: "
                  f"{again} --resume", file=sys.stderr)
        else:
            print(f"interrupted before round 0 was saved in {out}; start again with: {again}",
                  file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    print(f"results in {out}/ (metrics.jsonl, summary.json, accuracy.png)")
    return 0


def _matrix(args: argparse.Namespace) -> int:
    from .matrix import load_matrix, run_matrix

    matrix = load_matrix(args.config)
    out = args.out or str(Path("results") / matrix.name)
    run_matrix(matrix, out, seeds=args.seeds, jobs=args.jobs, progress=not args.quiet)
    print(f"report: {Path(out) / 'report.md'}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .fl import plot_runs

    out = plot_runs(args.run_dirs, args.out, metric=args.metric, labels=args.labels,
                    title=args.title)
    print(f"wrote {out}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fedsec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  fedsec run                      the main job (configs/default.yaml)\n"
               "  fedsec run my.yaml --set train_args.comm_round=5\n"
               "  fedsec matrix paper/exp3_byzantine --seeds 3\n"
               "  fedsec list                     attacks, defenses, models, datasets\n"
               "  fedsec selftest                 the native core against the references")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="what the installed native core was built with and "
                                            "can use")
    info.add_argument("--json", action="store_true", help="fedsec.build_info() as JSON")
    info.set_defaults(handler=_info)
    commands.add_parser("list", help="every attack, defense, model and dataset with its "
                                     "parameters"
                        ).set_defaults(handler=_list)
    selftest = commands.add_parser(
        "selftest", help="check every aggregator on every usable backend against the references")
    selftest.add_argument("--quick", action="store_true", help="fewer shapes")
    selftest.set_defaults(handler=_selftest)

    run = commands.add_parser("run", help="run an FL experiment from a YAML config "
                                          "(resumable)")
    run.add_argument("config", nargs="?", default="default",
                     help="a YAML file, or a shipped config by name (default: 'default')")
    run.add_argument("--out", help="run directory (default: runs/<config name>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last completed round")
    run.add_argument("--overwrite", action="store_true",
                     help="start again in an --out that already holds a run")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a config key (value read as YAML); repeatable")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=_run)

    matrix = commands.add_parser("matrix", help="run an attack x defense matrix over seeds "
                                                "and write its table, figures and report")
    matrix.add_argument("config", help="a matrix YAML file or shipped name "
                                       "(e.g. paper/exp3_byzantine)")
    matrix.add_argument("--seeds", type=_positive_int, help="seeds per cell, >= 1 (default: "
                                                            "the config's)")
    matrix.add_argument("--out", help="output directory (default: results/<matrix name>)")
    matrix.add_argument("--jobs", type=_positive_int, default=1,
                        help="runs in parallel processes, >= 1")
    matrix.add_argument("--quiet", action="store_true", help="no progress bar")
    matrix.set_defaults(handler=_matrix)

    plot = commands.add_parser("plot", help="overlay runs' curves in one figure")
    plot.add_argument("run_dirs", nargs="+", help="run directories")
    plot.add_argument("--out", default="comparison.png", help="PNG to write")
    plot.add_argument("--metric", default="test_accuracy",
                      help="record key per round: test_accuracy, test_loss, "
                           "backdoor_accuracy, train_loss, ...")
    plot.add_argument("--labels", nargs="+", help="one legend label per run directory")
    plot.add_argument("--title")
    plot.set_defaults(handler=_plot)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:  # before a run's rounds started (`_run` reports a run's own)
        print(f"fedsec {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:  # fedsec's config, data and run errors
        if os.environ.get("FEDSEC_TRACEBACK"):
            raise
        print(f"fedsec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
