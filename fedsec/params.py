"""Parameters declared once, checked by one routine.

A parameter (a YAML key of a component or of an experiment section, a model option, an
argument of a drop-in rule) states its type by its annotation and its default, its doc and its
bounds or choices in one place::

    f: int = doc(1, "Byzantine clients tolerated", ge=0)
    beta: float = doc(0.1, "fraction trimmed at each end", ge=0, lt=0.5)
    mode: str = doc("full", "what the attacker sees", choices=("full", "partial"))

``coerce(where, value, annotation, bounds)`` is the one check of a value against both; every
message names ``where`` (e.g. ``defense_args.beta``), the value and what is allowed. A model
option states its bounds in its annotation, ``Annotated[int, Bounds(ge=1)]``. Checks that need
the federation (n > 2f + 2) stay in the component's ``validate``.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Literal


class ParameterTypeError(TypeError, ValueError):
    """A value of the wrong type. A TypeError for the drop-in functions' callers, and a
    ValueError, as every config error is, for the config parsers."""


@dataclass(frozen=True)
class Bounds:
    """What a number must satisfy (``ge``, ``gt``, ``le``, ``lt``) or the values a choice may
    take (``choices``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))

    def describe(self, kind: Any = float) -> str:
        """The allowed values in words: "one of a, b", "in [0, 1)", ">= 1"."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        low = (f"[{self.ge:g}" if self.ge is not None else
               f"({self.gt:g}" if self.gt is not None else None)
        high = (f"{self.le:g}]" if self.le is not None else
                f"{self.lt:g})" if self.lt is not None else None)
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f"{'>=' if low[0] == '[' else '>'} {low[1:]}"
        if high:
            return f"{'<=' if high[-1] == ']' else '<'} {high[:-1]}"
        return ""

    def check(self, where: str, value: Any, kind: Any = float) -> None:
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{where}={value!r} is not valid; valid: "
                                 f"{', '.join(map(str, self.choices))}")
            return
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return
        inside = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                  and (self.le is None or value <= self.le)
                  and (self.lt is None or value < self.lt))
        if not inside:
            raise ValueError(f"{where}={value!r} must be {self._words(kind)}")

    def _words(self, kind: Any) -> str:
        # The two phrasings users meet most, kept in the words the messages always had.
        if kind is float and self.gt == 0 and self.le is None and self.lt is None:
            return "a positive finite number"
        if kind is float and self.ge == 0 and self.le is None and self.lt is None:
            return "a finite number >= 0"
        return self.describe(kind)


# Annotations of model options (constructor keywords), which have no dataclass field to carry
# bounds: ``num_layers: PositiveInt = 2``.
PositiveInt = typing.Annotated[int, Bounds(ge=1)]
UnitInterval = typing.Annotated[float, Bounds(ge=0, lt=1)]  # [0, 1): dropout, momentum


def doc(default: Any, text: str, *, factory: Callable[[], Any] | None = None,
        ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None, choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with ``default`` (or ``factory``), documented by ``text`` and bounded
    by ``ge``/``gt``/``le``/``lt`` or ``choices`` (shown by `fedsec list`, enforced by
    ``coerce``)."""
    metadata = {"doc": text, "bounds": Bounds(ge, gt, le, lt,
                                              tuple(choices) if choices is not None else None)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def bounds_of(f: dataclasses.Field) -> Bounds:
    return f.metadata.get("bounds") or Bounds()


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


def coerce(where: str, value: Any, annotation: Any, bounds: Bounds | None = None) -> Any:
    """``value`` checked against the annotation's type (ints are accepted for floats; floats
    must be finite) and against ``bounds``; returns it converted (an int given for a float
    becomes a float)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        bounds = next((e for e in extras if isinstance(e, Bounds)), bounds)
        return coerce(where, value, annotation, bounds)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(where, value, option, bounds)
            except ValueError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        Bounds(choices=typing.get_args(annotation)).check(where, value)
        return value
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1]
        if not isinstance(value, (list, tuple)):
            raise ParameterTypeError(f"{where} must be a list; got {value!r}")
        return origin(coerce(f"{where}[{i}]", v, item, bounds) for i, v in enumerate(value))
    value = _typed(where, value, annotation)
    if bounds:
        bounds.check(where, value, annotation)
    return value


def _typed(where: str, value: Any, annotation: Any) -> Any:
    if annotation is bool:
        if not isinstance(value, bool):
            raise ParameterTypeError(f"{where} must be true or false; got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ParameterTypeError(f"{where} must be an integer; got {_described(value)}")
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ParameterTypeError(f"{where} must be a number; got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{where}={value!r} must be a finite number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ParameterTypeError(f"{where} must be a string; got {value!r}")
        return value
    return value


def allowed_values(annotation: Any) -> str:
    """What an annotation allows beyond its type, in words ("" when nothing): the bounds of an
    ``Annotated`` number or the choices of a ``Literal``."""
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is typing.Annotated:
            bounds = next((e for e in typing.get_args(arg)[1:] if isinstance(e, Bounds)), None)
            if bounds:
                return bounds.describe()
        if typing.get_origin(arg) is Literal:
            return Bounds(choices=typing.get_args(arg)).describe()
    return ""


def check(where: str, value: Any, annotation: Any, **bounds: Any) -> Any:
    """``coerce`` with the bounds as keywords: a drop-in function's argument check,
    ``check("f", f, int, ge=0)``."""
    return coerce(where, value, annotation, Bounds(**bounds))


def parse_fields(cls: type, values: Mapping[str, Any], section: str,
                 unknown: Callable[[str, list[str]], str]) -> Any:
    """An instance of the dataclass ``cls`` from ``values``, each checked by ``coerce`` under
    ``section.key``; a key that is not a field raises ValueError(``unknown(key, fields)``)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(unknown(key, list(fields)))
        checked[key] = coerce(f"{section}.{key}", value, hints[key], bounds_of(fields[key]))
    return cls(**checked)


def check_defaults(cls: type) -> None:
    """Every default of ``cls`` passes its own field's check (a declaration error otherwise):
    run by the tests over every registered component and config section."""
    hints = typing.get_type_hints(cls, include_extras=True)
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        coerce(f"{cls.__qualname__}.{f.name}", value, hints[f.name], bounds_of(f))
