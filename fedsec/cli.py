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


def _list(_: argparse.Namespace) -> int:
    import dataclasses

    from .security import Attack, Defense
    from .security.registry import names, resolve

    for base, title in ((Attack, "attacks (attack_type)"), (Defense, "defenses (defense_type)")):
        print(title)
        for name, aliases in names(base).items():
            cls = resolve(base, name)
            stages = ", ".join(sorted(s.value for s in cls.stages))
            also = f" (also: {', '.join(aliases)})" if aliases else ""
            print(f"  {name}{also}  [{stages}]")
            for f in dataclasses.fields(cls.Params):
                default = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
                print(f"      {f.name} = {default!r}")
                if f.metadata.get("doc"):
                    print(f"          {f.metadata['doc']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedsec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="what the installed native core was built with and can use"
                        ).set_defaults(handler=_info)
    commands.add_parser("list", help="every attack and defense with its stages and parameters"
                        ).set_defaults(handler=_list)
    selftest = commands.add_parser(
        "selftest", help="check every aggregator on every usable backend against the references")
    selftest.add_argument("--quick", action="store_true", help="fewer shapes")
    selftest.set_defaults(handler=_selftest)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
