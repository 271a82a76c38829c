"""``attack_args`` / ``defense_args`` of an experiment's YAML, parsed into components.

The keys are FedML's: ``enable_attack`` / ``attack_type`` (``enable_defense`` /
``defense_type``) plus the component's parameters, flat beside them. Every problem is found
here, when the config is loaded, before any training: unknown names and keys (the message
lists the valid ones), wrong types and values outside a field's bounds (``fedsec.params``), and
values the component rejects for this federation.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..params import parse_fields
from .base import Attack, Component, Defense, Federation
from .registry import resolve
from .schedule import AttackWindow


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    """A validated ``attack_args`` / ``defense_args``: the class and its parameters. An
    experiment calls ``create()`` for a fresh component (with its own state, e.g. FoolsGold's
    histories), so one config can start several experiments."""

    cls: type
    params: Any

    def create(self) -> Component:
        return self.cls(self.params)

    def as_args(self, kind: str) -> dict[str, Any]:
        """The YAML section back, every parameter spelled out (for a run's resolved config)."""
        return {f"enable_{kind}": True, f"{kind}_type": self.cls.name,
                **dataclasses.asdict(self.params)}


def build_attack(args: Mapping | None, federation: Federation) -> Attack | None:
    spec = parse_component(Attack, args, federation)
    return spec.create() if spec else None


def build_defense(args: Mapping | None, federation: Federation) -> Defense | None:
    spec = parse_component(Defense, args, federation)
    return spec.create() if spec else None


def parse_component(base: type, args: Mapping | None, federation: Federation
                    ) -> ComponentSpec | None:
    """``attack_args`` (base=Attack) or ``defense_args`` (base=Defense) checked against the
    federation; None when the section is absent or not enabled."""
    kind = base.__name__.lower()
    section = f"{kind}_args"
    if args is None:
        return None
    if not isinstance(args, Mapping):
        raise ValueError(f"{section} must be a mapping; got {args!r}")
    enable = args.get(f"enable_{kind}", False)
    if not isinstance(enable, bool):
        raise ValueError(f"{section}.enable_{kind} must be true or false; got {enable!r}")
    if not enable:
        return None
    if f"{kind}_type" not in args:
        raise ValueError(f"{section}: enable_{kind} is true but {kind}_type is missing")
    cls = resolve(base, args[f"{kind}_type"])
    fields = {f.name for f in dataclasses.fields(cls.Params)}

    def unknown(key: str, valid: list[str]) -> str:
        return (f"{section}: unknown key {key!r} for {kind}_type {cls.name!r}; valid keys: "
                f"{', '.join(sorted(valid)) or 'none'}")

    values = {k: v for k, v in args.items() if k not in (f"enable_{kind}", f"{kind}_type")}
    params = parse_fields(cls.Params, values, section, unknown)
    try:
        if isinstance(params, AttackWindow):
            params.check_window()
        cls.validate(params, federation)
    except ValueError as exc:
        raise ValueError(_in_section(str(exc), section, cls.name, fields)) from None
    return ComponentSpec(cls, params)


def _in_section(message: str, section: str, name: str, fields: set[str]) -> str:
    """A component's ``validate`` message placed in its YAML section: "key=..." becomes
    "defense_args.key=...", anything else is prefixed with the section and component."""
    key = message.split("=", 1)[0]
    if key in fields:
        return f"{section}.{message}"
    return f"{section} ({name}): {message}"
