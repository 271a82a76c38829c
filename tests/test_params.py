"""The parameter schema (fedsec.params): one declaration per parameter, one check for all.

Every registered attack and defense, every experiment section and every model option is
declared through it, so a default that breaks its own bounds is a declaration error caught here.
"""
from __future__ import annotations

import re
import subprocess
import sys
import typing

import pytest

from fedsec.fl import config as fl_config
from fedsec.models.registry import families
from fedsec.params import (Bounds, ParameterTypeError, PositiveInt, allowed_values, check,
                           check_defaults, coerce)
from fedsec.security import Attack, Defense
from fedsec.security.registry import names, resolve


@pytest.mark.parametrize("bounds, value, message", [
    (Bounds(ge=1), 0, "k=0 must be >= 1"),
    (Bounds(gt=0.5), 0.5, "k=0.5 must be > 0.5"),
    (Bounds(le=3), 4, "k=4 must be <= 3"),
    (Bounds(lt=1), 1.0, "k=1.0 must be < 1"),
    (Bounds(ge=0, lt=0.5), 0.5, "k=0.5 must be in [0, 0.5)"),
    (Bounds(gt=0, le=1), 0.0, "k=0.0 must be in (0, 1]"),
    (Bounds(gt=0), -2.0, "k=-2.0 must be a positive finite number"),
    (Bounds(ge=0), -1.0, "k=-1.0 must be a finite number >= 0"),
    (Bounds(choices=("a", "b")), "c", "k='c' is not valid; valid: a, b"),
])
def test_out_of_bounds_messages_name_key_value_and_range(bounds, value, message):
    annotation = str if bounds.choices else type(value)
    with pytest.raises(ValueError, match=re.escape(message)):
        coerce("k", value, annotation, bounds)


@pytest.mark.parametrize("bounds, value", [(Bounds(ge=1), 1), (Bounds(gt=0, le=1), 1.0),
                                           (Bounds(ge=0, lt=0.5), 0.0),
                                           (Bounds(choices=(1, 2)), 2)])
def test_values_on_the_closed_edge_pass(bounds, value):
    assert coerce("k", value, type(value), bounds) == value


def test_types_are_checked_before_bounds_and_ints_become_floats():
    assert coerce("x", 3, float, Bounds(gt=0)) == 3.0
    assert isinstance(coerce("x", 3, float), float)
    for value, annotation, words in ((1.5, int, "an integer"), (True, int, "an integer"),
                                     ("1", float, "a number"), (1, bool, "true or false")):
        with pytest.raises(ParameterTypeError, match=f"x must be {words}"):
            coerce("x", value, annotation, Bounds(ge=0))
    with pytest.raises(ValueError, match=re.escape("x=nan must be a finite number")):
        coerce("x", float("nan"), float)


def test_optional_lists_literals_and_annotated_types():
    assert coerce("x", None, typing.Optional[int], Bounds(ge=1)) is None
    with pytest.raises(ValueError, match=re.escape("x=0 must be >= 1")):
        coerce("x", 0, int | None, Bounds(ge=1))
    with pytest.raises(ValueError, match=re.escape("x[1]=-1 must be >= 0")):
        coerce("x", [1, -1], list[int], Bounds(ge=0))
    with pytest.raises(ValueError, match=re.escape("x='tanh2' is not valid; valid: relu, tanh")):
        coerce("x", "tanh2", typing.Literal["relu", "tanh"])
    with pytest.raises(ValueError, match=re.escape("x=0 must be >= 1")):
        coerce("x", 0, PositiveInt)
    assert allowed_values(PositiveInt | None) == ">= 1"
    assert allowed_values(typing.Literal["a", "b"]) == "one of a, b"
    assert allowed_values(int) == ""


def test_drop_in_argument_errors_are_type_and_value_errors():
    with pytest.raises(TypeError, match="f must be an integer"):
        check("f", 1.5, int, ge=0)
    with pytest.raises(ValueError, match=re.escape("f=-1 must be >= 0")):
        check("f", -1, int, ge=0)


def _components() -> list:
    return [pytest.param(resolve(base, name), id=f"{base.__name__.lower()}-{name}")
            for base in (Attack, Defense) for name in names(base)]


@pytest.mark.parametrize("cls", _components())
def test_every_component_default_passes_its_own_declaration(cls):
    check_defaults(cls.Params)


@pytest.mark.parametrize("section", list(fl_config.SECTIONS.values()), ids=lambda c: c.__name__)
def test_every_experiment_default_passes_its_own_declaration(section):
    if section is fl_config.ModelArgs:
        pytest.skip("model_args holds the model's options, checked per model below")
    check_defaults(section)


@pytest.mark.parametrize("family", families(), ids=lambda f: f.name)
def test_every_model_option_default_passes_its_annotation(family):
    hints = typing.get_type_hints(family.cls.__init__, include_extras=True)
    for key, default in family.options().items():
        coerce(f"{family.name}.{key}", default, hints[key])


def test_fedsec_list_prints_bounds_and_choices():
    out = subprocess.run([sys.executable, "-m", "fedsec.cli", "list"], capture_output=True,
                         text=True, check=True).stdout
    assert "beta = 0.1  (in [0, 0.5))" in out
    assert "attack_mode = 'random'  (one of random, zero, flip)" in out
    assert "num_layers = 2  (>= 1)" in out
