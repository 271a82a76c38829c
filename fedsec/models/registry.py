"""Models by the names YAML uses (``model:``), with their options (``model_args:``).

A model family is an ``nn.Module`` subclass whose constructor is
``(input_shape, num_classes, *, option=default, ...)``; ``@register_model`` files it under its
canonical name and aliases (FedML's spellings). The keyword-only parameters of the constructor
are the model's options: their names are the only keys ``build_model`` accepts and their
annotations the types and bounds ``fedsec.params.coerce`` checks (``PositiveInt`` for sizes,
``Literal`` for choices). The constructor checks what needs the input (a shape the
architecture can take, heads dividing the width).
"""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar

from torch import nn

from ..params import allowed_values, coerce

Task = Literal["classification", "language_model"]
M = TypeVar("M", bound=type[nn.Module])


@dataclass(frozen=True)
class ModelFamily:
    name: str
    aliases: tuple[str, ...]
    task: Task
    cls: type[nn.Module]

    @property
    def description(self) -> str:
        """The first paragraph of the class docstring, on one line."""
        summary = (self.cls.__doc__ or self.name).strip().split("\n\n")[0]
        return " ".join(summary.split())

    def options(self) -> dict[str, Any]:
        """The options (the constructor's keyword-only parameters) and their defaults."""
        parameters = inspect.signature(self.cls.__init__).parameters.values()
        return {p.name: p.default for p in parameters
                if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def options_and_bounds(self) -> dict[str, tuple[Any, str]]:
        """Each option's default and its allowed values in words (for `fedsec list`)."""
        hints = typing.get_type_hints(self.cls.__init__, include_extras=True)
        return {key: (default, allowed_values(hints[key]))
                for key, default in self.options().items()}


_FAMILIES: dict[str, ModelFamily] = {}  # every canonical name and alias


def register_model(name: str, *aliases: str, task: Task = "classification"
                   ) -> Callable[[M], M]:
    def decorate(cls: M) -> M:
        family = ModelFamily(name, aliases, task, cls)
        for key in (name, *aliases):
            if key in _FAMILIES:
                raise ValueError(f"model name {key!r} is already taken by "
                                 f"{_FAMILIES[key].cls.__name__}")
            _FAMILIES[key] = family
        cls.name = name
        return cls

    return decorate


def families() -> list[ModelFamily]:
    """Every registered family once, sorted by canonical name."""
    return sorted({f.name: f for f in _FAMILIES.values()}.values(), key=lambda f: f.name)


def family(name: str) -> ModelFamily:
    if not isinstance(name, str) or name not in _FAMILIES:
        valid = "; ".join(f.name + (f" (aliases: {', '.join(f.aliases)})" if f.aliases else "")
                          for f in families())
        raise ValueError(f"unknown model {name!r}; valid: {valid}")
    return _FAMILIES[name]


def build(name: str, input_shape: Any, num_classes: Any, options: dict[str, Any]
          ) -> nn.Module:
    model_family = family(name)
    shape = _check_input_shape(name, input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"model {name!r}: num_classes must be a positive integer; "
                         f"got {num_classes!r}")
    valid = model_family.options()
    hints = typing.get_type_hints(model_family.cls.__init__, include_extras=True)
    checked = {}
    for key, value in options.items():
        if key not in valid:
            raise ValueError(f"model {name!r}: unknown option {key!r}; valid options: "
                             f"{', '.join(valid) or 'none'}")
        checked[key] = coerce(f"model {name!r}: option {key}", value, hints[key])
    return model_family.cls(shape, num_classes, **checked)


def _check_input_shape(name: str, input_shape: Any) -> tuple[int, ...]:
    if (not isinstance(input_shape, (tuple, list)) or not input_shape
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_shape)):
        raise ValueError(f"model {name!r}: input_shape must be a non-empty tuple of positive "
                         f"integers (one sample's shape); got {input_shape!r}")
    return tuple(input_shape)
