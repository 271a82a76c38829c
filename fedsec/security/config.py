"""``attack_args`` / ``defense_args`` of an experiment's YAML, parsed into components.

The keys are FedML's: ``enable_attack`` / ``attack_type`` (``enable_defense`` /
``defense_type``) plus the component's parameters, flat beside them. Every problem is found
here, when the config is loaded, before any training: unknown names and keys (the message
lists the valid ones), wrong types, and values the component rejects for this federation.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from .base import Attack, Component, Defense, Federation
from .registry import resolve


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
    hints = typing.get_type_hints(cls.Params)
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    values = {}
    for key, value in args.items():
        if key in (f"enable_{kind}", f"{kind}_type"):
            continue
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "none"
            raise ValueError(f"{section}: unknown key {key!r} for {kind}_type {cls.name!r}; "
                             f"valid keys: {valid}")
        values[key] = coerce(f"{section}.{key}", value, hints[key])
    params = cls.Params(**values)
    try:
        cls.validate(params, federation)
    except ValueError as exc:
        raise ValueError(_in_section(str(exc), section, cls.name, fields)) from None
    return ComponentSpec(cls, params)


# Exponent forms that PyYAML (YAML 1.1) reads as strings: it wants a dot and a signed exponent.
_EXPONENT_FORM = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _described(value: Any) -> str:
    """``value`` as a wrong integer, with what the user probably meant."""
    if isinstance(value, float):
        return f"the float {value!r} (write integers without a decimal point or exponent)"
    if isinstance(value, str) and _EXPONENT_FORM.fullmatch(value.strip()):
        return (f"the string {value!r} (YAML reads exponent forms such as 1e12 as text; write "
                f"the integer out in digits)")
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return f"the string {value!r} (written in quotes; drop them)"
    return repr(value)


def _in_section(message: str, section: str, name: str, fields: set[str]) -> str:
    """A component's ``validate`` message placed in its YAML section: "key=..." becomes
    "defense_args.key=...", anything else is prefixed with the section and component."""
    key = message.split("=", 1)[0]
    if key in fields:
        return f"{section}.{message}"
    return f"{section} ({name}): {message}"


def coerce(where: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against the field's type (ints are accepted for floats)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(where, value, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0])
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list; got {value!r}")
        return origin(coerce(f"{where}[{i}]", v, item) for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false; got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer; got {_described(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number; got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string; got {value!r}")
        return value
    return value
