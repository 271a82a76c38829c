"""The `fedsec` command."""
from __future__ import annotations

import argparse
import json
import sys


def _info(_: argparse.Namespace) -> int:
    from .build import build_info

    print(json.dumps(build_info(), indent=2))
    return 0


def _selftest(args: argparse.Namespace) -> int:
    from .selftest import run_selftest

    return 0 if run_selftest(quick=args.quick) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedsec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="what the installed native core was built with and can use"
                        ).set_defaults(handler=_info)
    selftest = commands.add_parser(
        "selftest", help="check every aggregator on every usable backend against the references")
    selftest.add_argument("--quick", action="store_true", help="fewer shapes")
    selftest.set_defaults(handler=_selftest)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
