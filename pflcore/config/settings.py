"""Typed settings: every field declares its check next to it.

A package's settings are a tree of frozen dataclasses (``pfedhn.settings``,
...). Each leaf field is made with :func:`setting`, which carries a
:class:`Rule`: the test a value must pass and the phrase that says so. Checks
that tie several fields together live in the group's ``check`` method.
:func:`parse` walks the composed (plain) config against the tree, in field
order, and stops at the first value that breaks a rule with one line that
names the setting by its dotted path::

    hn.lr must be null or > 0, got -1

``parse`` runs before Ray starts, so a bad value costs nothing; its result is
what the run uses (:func:`to_dict` gives the plain form for records and for
Flower's flat run config, ``pflcore.config.runconfig``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from pflcore.config import ConfigError


@dataclass(frozen=True)
class Rule:
    """What a value of one setting must be.

    Attributes
    ----------
    holds : callable
        ``holds(value)`` is true for an acceptable value.
    must : str
        The requirement as it reads after "<setting> must": "be > 0".
    """

    holds: Callable[[Any], bool]
    must: str


INT64 = (-(2**63), 2**63 - 1)  # what Torch, NumPy and Flower's records hold


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``True``/``False`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def fits_int64(value: int) -> bool:
    """Whether ``value`` fits a signed 64-bit integer."""
    return INT64[0] <= value <= INT64[1]


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (booleans are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(low: int | None = None, high: int | None = None) -> Rule:
    """An integer in ``low..high`` (either bound may be open-ended).

    Open ends stop at the 64-bit range: a larger value fails inside Torch or
    NumPy, after Ray has started.
    """
    if low == 1 and high is None:
        must = "be a positive integer"
    elif high is None:
        must = f"be an integer >= {low}" if low is not None else "be an integer"
    elif low is None:
        must = f"be an integer <= {high}"
    else:
        must = f"lie in {low}..{high}"
    return Rule(
        lambda v: (
            is_int(v)
            and fits_int64(v)
            and (low is None or v >= low)
            and (high is None or v <= high)
        ),
        must,
    )


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Rule:
    """A finite real number between ``low`` and ``high``, each end closed unless open.

    Infinities and NaN never pass (Hydra reads ``inf``, ``nan`` and
    ``1e999`` as floats).
    """
    if high is None and low is not None:
        must = f"be {'>' if low_open else '>='} {low:g}"
    elif low is None and high is not None:
        must = f"be {'<' if high_open else '<='} {high:g}"
    elif low is not None and high is not None:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        must = f"lie in {left}{low:g}, {high:g}{right}"
    else:
        must = "be a number"

    def holds(v: Any) -> bool:
        if not is_number(v) or not math.isfinite(v):
            return False
        if low is not None and (v <= low if low_open else v < low):
            return False
        return not (high is not None and (v >= high if high_open else v > high))

    return Rule(holds, must)


POSITIVE = number(0, low_open=True)
NON_NEGATIVE = number(0)
FRACTION = number(0, 1, low_open=True)  # (0, 1]
MOMENTUM = number(0, 1, high_open=True)  # [0, 1)
BOOLEAN = Rule(lambda v: isinstance(v, bool), "be true or false")
TEXT = Rule(lambda v: isinstance(v, str), "be a string")
NAME = Rule(lambda v: isinstance(v, str) and v.strip() != "", "be a non-empty string")


def one_of(*choices: Any, must: str | None = None) -> Rule:
    """One of ``choices`` (compared with ``==``, booleans not taken for ints).

    ``must`` words the requirement differently ("be aggregate or local").
    """
    return Rule(
        lambda v: any(v == c and type(v) is type(c) for c in choices),
        must or f"be one of {list(choices)}",
    )


def nullable(rule: Rule) -> Rule:
    """``null`` or a value that passes ``rule``."""
    wants = rule.must.removeprefix("be ")
    return Rule(lambda v: v is None or rule.holds(v), f"be null or {wants}")


def list_of(rule: Rule, what: str) -> Rule:
    """A list whose every item passes ``rule`` (``what`` names the items)."""
    return Rule(
        lambda v: isinstance(v, list) and all(rule.holds(x) for x in v),
        f"be a list of {what}",
    )


EXISTING_FOLDER = Rule(
    lambda v: v is None or (isinstance(v, str) and Path(v).is_dir()),
    "name an existing run folder",
)


class _Absent:
    """The default of a key that only some dataset groups have."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __copy__(self) -> _Absent:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Absent:
        return self  # ``dataclasses.asdict`` deep-copies; ABSENT must stay one object

    def __reduce__(self) -> str:
        return "ABSENT"  # unpickles as the module's ABSENT


ABSENT: Any = _Absent()


def setting(rule: Rule, default: Any = dataclasses.MISSING, doc: str = "") -> Any:
    """A leaf field checked by ``rule``; ``default`` only for keys older runs lack."""
    metadata = {"rule": rule, "doc": doc}
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata=metadata
        )
    return dataclasses.field(default=default, metadata=metadata)


class Group:
    """Base of every settings group: cross-field checks go in :meth:`check`."""

    def check(self) -> None:
        """Raise :class:`ConfigError` if fields that pass their rules clash."""


G = TypeVar("G", bound=Group)


def parse(
    cls: type[G], data: Mapping[str, Any], path: str = "", *, checked: bool = True
) -> G:
    """Build ``cls`` from the plain config ``data``, checking every field.

    Parameters
    ----------
    cls : type
        A dataclass deriving from :class:`Group`.
    data : mapping
        The composed configuration (or the part under ``path``).
    path : str
        Dotted prefix of ``data`` in the whole configuration ("" at the top).
    checked : bool
        False: only read the values, for a configuration the launching side
        has already checked (a client's worker: the rules and
        :meth:`Group.check` include machine checks, such as the resource
        shares against this machine, that belong to the launcher). Missing
        and unknown keys are still refused.

    Raises
    ------
    ConfigError
        On the first missing key, unknown key, broken rule or failed
        :meth:`Group.check`, naming the setting.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path.rstrip('.')} must be a group of settings, got {data!r}"
        )
    known = {f.name for f in dataclasses.fields(cast(Any, cls))}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ConfigError(
            f"{path}{unknown[0]} is not a setting here (known: {sorted(known)})"
        )
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cast(Any, cls)):
        name = f"{path}{f.name}"
        nested = hints[f.name]
        if isinstance(nested, type) and issubclass(nested, Group):
            values[f.name] = parse(
                nested, data.get(f.name, {}), f"{name}.", checked=checked
            )
            continue
        if f.name not in data:
            if f.default is not dataclasses.MISSING:  # a key older runs lack
                values[f.name] = f.default
                continue
            if f.default_factory is not dataclasses.MISSING:
                values[f.name] = f.default_factory()
                continue
            raise ConfigError(f"{name} is missing")
        value = data[f.name]
        rule: Rule | None = f.metadata.get("rule")
        if rule is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no rule")
        if checked and not rule.holds(value):
            raise ConfigError(
                f"{name} must {rule.must}, got {value!r}{why_not(rule, value)}"
            )
        values[f.name] = value
    group = cls(**values)
    if checked:
        group.check()
    return group


def why_not(rule: Rule, value: Any) -> str:
    """What is wrong with ``value`` where its phrase alone would puzzle, or "".

    Hydra reads ``1e3`` and ``10.0`` as floats, ``inf``, ``nan`` and
    ``1e999`` as non-finite floats, and a quoted ``'0.1'`` or a ``08`` as
    text.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return " (not a finite number)"
    if is_int(value) and not fits_int64(value):
        return " (beyond 64-bit integers)"
    if isinstance(value, float) and value.is_integer() and rule.holds(int(value)):
        return f" (a float: write {int(value)})"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return ""
        if rule.holds(number) or (number.is_integer() and rule.holds(int(number))):
            return " (read as text: write a plain number)"
    return ""


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """``cls``'s resolved field types (kept: resolving them is most of a parse)."""
    import typing

    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def to_dict(group: Group) -> dict[str, Any]:
    """The plain nested dict of ``group`` (field order; absent keys left out)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not ABSENT}
        return value

    return cast(dict[str, Any], strip(dataclasses.asdict(cast(Any, group))))


def leaf_fields(cls: type[Group], path: str = "") -> Iterator[tuple[str, Rule | None]]:
    """Every leaf setting of ``cls`` as ``(dotted path, rule)``."""
    hints = _hints(cls)
    for f in dataclasses.fields(cast(Any, cls)):
        nested = hints[f.name]
        if isinstance(nested, type) and issubclass(nested, Group):
            yield from leaf_fields(nested, f"{path}{f.name}.")
        else:
            yield f"{path}{f.name}", f.metadata.get("rule")


def group_paths(cls: type[Group], path: str = "") -> Iterator[str]:
    """The dotted path of every group nested in ``cls`` (not ``cls`` itself)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cast(Any, cls)):
        nested = hints[f.name]
        if isinstance(nested, type) and issubclass(nested, Group):
            yield f"{path}{f.name}"
            yield from group_paths(nested, f"{path}{f.name}.")


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)
