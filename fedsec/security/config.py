"""``attack_args`` / ``defense_args`` of an experiment's YAML, parsed into components.

The keys are FedML's: ``enable_attack`` / ``attack_type`` (``enable_defense`` /
``defense_type``) plus the component's parameters, flat beside them. Every problem is found
here, when the config is loaded, before any training: unknown names and keys (the message
lists the valid ones), wrong types and values outside a field's bounds (``fedsec.params``), and
values the component rejects for this federation.

``defense_type`` may also be a list, a chain of defenses (``[norm_diff_clipping, median]``):
the members' parameters stay flat beside it, each key given to every member that declares it
(so a chain's ``byzantine_client_num`` is every member's f). A key two members declare must
have one type in both, and, when the YAML leaves it out, one default: else the config names
both members and asks for the key. The config refuses an empty chain, a defense listed twice
and two on-aggregation rules (a round aggregates once), naming them, and orders the members
by stage (before, on, after aggregation; the listed order within a stage), the order they run
in (``fedsec.security.pipeline.DefenseChain``).
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from ..params import parse_fields
from .base import Attack, Component, Defense, Federation, Setting, Stage
from .pipeline import DEFENSE_STAGES, DefenseChain
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

    @property
    def name(self) -> str:
        return self.cls.name

    def as_args(self, kind: str) -> dict[str, Any]:
        """The YAML section back, every parameter spelled out (for a run's resolved config)."""
        return {f"enable_{kind}": True, f"{kind}_type": self.cls.name,
                **dataclasses.asdict(self.params)}


@dataclasses.dataclass(frozen=True)
class ChainSpec:
    """A validated chain of defenses, its members in the order they run."""

    members: tuple[ComponentSpec, ...]
    cls = DefenseChain

    def create(self) -> DefenseChain:
        return DefenseChain([m.create() for m in self.members])

    @property
    def name(self) -> list[str]:
        """The members' names, as ``defense_type`` lists them."""
        return [m.cls.name for m in self.members]

    def as_args(self, kind: str = "defense") -> dict[str, Any]:
        """``defense_type`` as the list of members, every member's parameters flat beside it
        (a shared key once: its members hold one value)."""
        out: dict[str, Any] = {f"enable_{kind}": True,
                               f"{kind}_type": self.name}
        for member in self.members:
            out.update(dataclasses.asdict(member.params))
        return out


def build_attack(args: Mapping | None, federation: Federation) -> Attack | None:
    spec = parse_component(Attack, args, federation)
    return _for_federation(spec.create(), federation) if spec else None


def build_defense(args: Mapping | None, federation: Federation) -> Defense | None:
    spec = parse_component(Defense, args, federation)
    return _for_federation(spec.create(), federation) if spec else None


def _for_federation(component: Component, federation: Federation) -> Component:
    """A component built for ``federation`` knows it (its ``setting``) until an engine's
    ``setup`` gives the whole experiment's constants."""
    component.setup(Setting(federation=federation))
    return component


def parse_component(base: type, args: Mapping | None, federation: Federation
                    ) -> ComponentSpec | ChainSpec | None:
    """``attack_args`` (base=Attack) or ``defense_args`` (base=Defense) checked against the
    federation; None when the section is absent or not enabled; a ChainSpec for a list of
    defenses."""
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
    name = args[f"{kind}_type"]
    values = {k: v for k, v in args.items() if k not in (f"enable_{kind}", f"{kind}_type")}
    if base is Defense and isinstance(name, (list, tuple)):
        return parse_chain(list(name), values, federation)
    return _parse_member(base, resolve(base, name), values, federation)


def _parse_member(base: type, cls: type, values: Mapping, federation: Federation
                  ) -> ComponentSpec:
    kind = base.__name__.lower()
    section = f"{kind}_args"
    fields = {f.name for f in dataclasses.fields(cls.Params)}

    def unknown(key: str, valid: list[str]) -> str:
        return (f"{section}: unknown key {key!r} for {kind}_type {cls.name!r}; valid keys: "
                f"{', '.join(sorted(valid)) or 'none'}")

    params = parse_fields(cls.Params, values, section, unknown)
    try:
        if isinstance(params, AttackWindow):
            params.check_window()
        cls.validate(params, federation)
    except ValueError as exc:
        raise ValueError(_in_section(str(exc), section, cls.name, fields)) from None
    return ComponentSpec(cls, params)


def parse_chain(names: list, values: Mapping, federation: Federation
                ) -> ComponentSpec | ChainSpec:
    """``defense_type: [a, b, ...]`` with the members' keys in ``values`` (see the module's
    doc); a list of one is that defense alone."""
    where = "defense_args.defense_type"
    if not names:
        raise ValueError(f"{where} is an empty list; name a defense, or several to chain them "
                         f"(e.g. [norm_diff_clipping, median])")
    classes = [resolve(Defense, name) for name in names]
    if len(classes) == 1:
        return _parse_member(Defense, classes[0], values, federation)
    shown = "[" + ", ".join(map(str, names)) + "]"
    for i, cls in enumerate(classes):
        if cls in classes[:i]:
            raise ValueError(f"{where}={shown} lists {cls.name} twice; a chain runs each "
                             f"defense once")
    rules = [name for name, cls in zip(names, classes) if Stage.ON_AGGREGATION in cls.stages]
    if len(rules) > 1:
        raise ValueError(f"{where}={shown} has {len(rules)} on-aggregation rules, "
                         f"{' and '.join(rules)}; a round aggregates once: keep one (filters "
                         f"and pre-aggregators may come before it)")
    hints = {cls: _field_types(cls) for cls in classes}
    for key in values:
        if not any(key in hints[cls] for cls in classes):
            valid = "; ".join(f"{cls.name}: {', '.join(sorted(hints[cls])) or 'none'}"
                              for cls in classes)
            raise ValueError(f"defense_args: unknown key {key!r} for the defense chain "
                             f"{shown}; valid keys: {valid}")
    _check_shared_keys(classes, hints, values, shown)
    members = []
    for cls in sorted(classes, key=_first_stage):
        try:
            members.append(_parse_member(Defense, cls, {k: v for k, v in values.items()
                                                        if k in hints[cls]}, federation))
        except ValueError as exc:
            raise ValueError(f"{exc} ({cls.name}, in the chain {shown})") from None
    return ChainSpec(tuple(members))


def _check_shared_keys(classes: list[type], hints: dict[type, dict], values: Mapping,
                       shown: str) -> None:
    """One flat key means one value: members declaring it must agree on its type, and on its
    default when the YAML leaves it out."""
    for i, first in enumerate(classes):
        for other in classes[i + 1:]:
            unset = []
            for key in sorted(hints[first].keys() & hints[other].keys()):
                if hints[first][key] != hints[other][key]:
                    raise ValueError(f"defense_args.{key}: {first.name} and {other.name} in "
                                     f"the chain {shown} both take it, as different types "
                                     f"({hints[first][key]} and {hints[other][key]}); a chain "
                                     f"cannot give them one value")
                defaults = getattr(first.Params(), key), getattr(other.Params(), key)
                if key not in values and defaults[0] != defaults[1]:
                    unset.append(f"{key} ({first.name}: {defaults[0]!r}, {other.name}: "
                                 f"{defaults[1]!r})")
            if unset:
                raise ValueError(f"defense_args: {first.name} and {other.name} in the chain "
                                 f"{shown} share keys whose defaults differ; set each once for "
                                 f"both: {', '.join(unset)}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls.Params)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls.Params)}


def _first_stage(cls: type) -> int:
    return min((DEFENSE_STAGES.index(s) for s in cls.stages if s in DEFENSE_STAGES), default=0)


def _in_section(message: str, section: str, name: str, fields: set[str]) -> str:
    """A component's ``validate`` message placed in its YAML section: "key=..." becomes
    "defense_args.key=...", anything else is prefixed with the section and component."""
    key = message.split("=", 1)[0]
    if key in fields:
        return f"{section}.{message}"
    return f"{section} ({name}): {message}"
