"""Attacks and defenses by the names YAML uses (``attack_type``, ``defense_type``).

Built-in components register themselves with ``@register_attack`` / ``@register_defense``,
under FedML's spelling plus readable aliases. A user's own class is reachable as
``"package.module:ClassName"``; it must subclass fedsec.security.Attack or Defense.
"""
from __future__ import annotations

import importlib
from typing import Callable, TypeVar

from .base import Attack, Component, Defense

C = TypeVar("C", bound=type[Component])

_REGISTRIES: dict[type, dict[str, type]] = {Attack: {}, Defense: {}}


def _register(base: type, name: str, aliases: tuple[str, ...]) -> Callable[[C], C]:
    def decorate(cls: C) -> C:
        if not issubclass(cls, base):
            raise TypeError(f"{cls.__name__} must subclass {base.__name__}")
        cls.name = name
        registry = _REGISTRIES[base]
        for key in (name, *aliases):
            if key in registry and registry[key] is not cls:
                raise ValueError(f"{base.__name__.lower()} name {key!r} is already taken by "
                                 f"{registry[key].__name__}")
            registry[key] = cls
        return cls

    return decorate


def register_attack(name: str, *aliases: str) -> Callable[[C], C]:
    return _register(Attack, name, aliases)


def register_defense(name: str, *aliases: str) -> Callable[[C], C]:
    return _register(Defense, name, aliases)


def _load_builtins() -> None:
    # Importing the packages runs their registrations.
    from . import attacks, defenses  # noqa: F401


def names(base: type) -> dict[str, list[str]]:
    """Canonical name -> aliases, for `fedsec list` and error messages."""
    _load_builtins()
    out: dict[str, list[str]] = {}
    for key, cls in _REGISTRIES[base].items():
        out.setdefault(cls.name, [])
        if key != cls.name:
            out[cls.name].append(key)
    return dict(sorted(out.items()))


def resolve(base: type, name: str) -> type:
    """The class registered as ``name``, or loaded from ``"module:Class"``."""
    kind = base.__name__.lower()
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind}_type must be a non-empty string; got {name!r}")
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{kind}_type {name!r}: cannot load {class_name} from {module_name} ({exc})") from exc
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ValueError(f"{kind}_type {name!r} is not a subclass of fedsec.security.{base.__name__}")
        if not cls.name:
            cls.name = name
        return cls
    _load_builtins()
    registry = _REGISTRIES[base]
    if name not in registry:
        valid = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind}_type {name!r}; valid: {valid} (or 'package.module:Class')")
    return registry[name]
