"""How every configuration setting is checked: its type from its annotation, then its range or choices.

A section of the configuration is a dataclass deriving from :class:`Section`; each field declared
with :func:`setting` carries the :class:`Rule` its value (each item, for a list) must follow. On
construction (also by ``dataclasses.replace``) a section coerces every value to its annotated type
(lists become tuples, whole numbers in a float field floats), checks the rules, then the rules that
tie its fields together (:meth:`Section.check_together`), and fails with a
:class:`~hieseg.errors.ConfigError` that names the setting (``section.key``) and shows the value.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hieseg.errors import ConfigError

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Rule:
    """A constraint on a setting's value (on each item of a list setting), and how to say it."""

    holds: Check
    text: str


def between(low: float | None = None, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False) -> Rule:
    """Values in an interval; ``None`` leaves that side unbounded."""

    def holds(value: float) -> bool:
        above = low is None or (value > low if open_low else value >= low)
        below = high is None or (value < high if open_high else value <= high)
        return above and below

    if high is None:
        text = f"{'>' if open_low else '>='} {_number(low)}"
    elif low is None:
        text = f"{'<' if open_high else '<='} {_number(high)}"
    else:
        text = f"in {'(' if open_low else '['}{_number(low)}, {_number(high)}{')' if open_high else ']'}"
    return Rule(holds, text)


def one_of(*choices: object) -> Rule:
    return Rule(lambda value: value in choices, "one of " + ", ".join(str(c) for c in choices))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def per_axis(rule: Rule) -> Rule:
    """A rule for each axis of a per-axis item, e.g. each (x, y, z) stride of a list of strides."""
    return Rule(lambda value: all(rule.holds(v) for v in value), f"{rule.text} on every axis")


ODD = Rule(lambda value: value % 2 == 1, "odd")
POSITIVE = between(0, open_low=True)
NON_NEGATIVE = between(0)
AT_LEAST_ONE = between(1)
PROBABILITY = between(0, 1)
OPEN_UNIT = between(0, 1, open_low=True, open_high=True)


def setting(default: Any, rule: Rule) -> Any:
    """A field with its default and the rule its value (each item, for a list) must follow."""
    return field(default=default, metadata={"rule": rule})


class Section:
    """Validation shared by the sections: types, then each field's rule, then :meth:`check_together`."""

    def __post_init__(self) -> None:
        section = section_name(type(self))
        hints = _type_hints(type(self))
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            name = f"{section}.{item.name}"
            value = _coerce(getattr(self, item.name), hints[item.name], name)
            rule = item.metadata.get("rule")
            if rule is not None and value is not None:
                values = value if isinstance(value, tuple) else (value,)
                if not all(rule.holds(v) for v in values):
                    what = "each value must" if isinstance(value, tuple) else "must"
                    raise ConfigError(f"{name}: {what} be {rule.text}, got {shown(value)}")
            object.__setattr__(self, item.name, value)
        self.check_together()

    def check_together(self) -> None:
        """Rules between fields of the section; none by default."""


def section_name(section_type: type) -> str:
    """A section's name in config.json: its class name without ``Config``, lower case (``UNetConfig``: ``unet``)."""
    return section_type.__name__.removesuffix("Config").lower()


@functools.cache
def _type_hints(section_type: type) -> dict[str, Any]:
    return typing.get_type_hints(section_type)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the annotated type (lists become tuples, whole numbers in a float field floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner, name)
    if origin is tuple:
        variable = len(args) == 2 and args[1] is Ellipsis
        item = args[0]
        wanted = "one or more" if variable else str(len(args))
        noun = {int: "whole numbers", float: "numbers"}.get(item, "values")
        if not isinstance(value, (list, tuple)) or (len(value) == 0 if variable else len(value) != len(args)):
            raise ConfigError(f"{name}: expected a list of {wanted} {noun}, got {shown(value)}")
        return tuple(_coerce(v, item, name) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name}: expected a whole number, got {shown(value)}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{name}: expected a number, got {shown(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {shown(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected text, got {shown(value)}")
        return value
    raise TypeError(f"{name}: no validation for the annotation {hint!r}")


def check_nesting(data: Any, limit: int) -> None:
    """Refuse ``data`` nested more than ``limit`` levels deep (lists and objects), before anything recursive
    (a message showing it, a comparison) walks it; the walk itself keeps its own stack, so any depth is safe."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
        if children and depth >= limit:
            raise ConfigError(f"nested too deeply: more than {limit} levels of lists and objects, where a "
                              "configuration has sections of settings")
        stack.extend((child, depth + 1) for child in children)


SHOWN_MAX_CHARS = 120
"""The longest a value is shown in a message; longer ones are cut, so a refusal stays one readable line."""


def shown(value: Any) -> str:
    """A value as the user wrote it: JSON where possible (``"high"``, ``nan``, ``[1, 2]``), cut to
    ``SHOWN_MAX_CHARS``."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value) if not isinstance(value, (list, dict)) else f"a {type(value).__name__} nested too deeply"
    return text if len(text) <= SHOWN_MAX_CHARS else text[:SHOWN_MAX_CHARS - 3] + "..."
