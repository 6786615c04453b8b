"""``pflcore.config.settings``: rules, parsing, and every package's schema."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from pflcore.config import ConfigError
from pflcore.config.settings import (
    ABSENT,
    BOOLEAN,
    FRACTION,
    MOMENTUM,
    POSITIVE,
    Group,
    integer,
    leaf_fields,
    list_of,
    nullable,
    number,
    one_of,
    parse,
    require,
    setting,
    to_dict,
)


@pytest.mark.parametrize(
    ("rule", "good", "bad", "must"),
    [
        (integer(1), [1, 7], [0, -1, 1.0, True, "3", None], "be a positive integer"),
        (integer(0), [0, 5], [-1, 0.5, False], "be an integer >= 0"),
        (integer(1, 4), [1, 4], [0, 5, 2.0], "lie in 1..4"),
        (POSITIVE, [1e-9, 3, 0.5], [0, -1, True, math.nan, "1"], "be > 0"),
        (FRACTION, [1, 0.5, 1e-9], [0, 1.0001, math.nan], "lie in (0, 1]"),
        (MOMENTUM, [0, 0.9], [1, -0.1], "lie in [0, 1)"),
        (BOOLEAN, [True, False], [0, 1, "true", None], "be true or false"),
        (one_of("a", 1), ["a", 1], ["b", True, 1.0], "be one of ['a', 1]"),
        (one_of("x", "y", must="be x or y"), ["x", "y"], ["z"], "be x or y"),
        (nullable(integer(1)), [None, 2], [0, "x"], "be null or a positive integer"),
        (list_of(integer(0), "ids"), [[], [0, 3]], [[-1], (1,), [1.5], None], ""),
    ],
)
def test_rules_accept_and_reject_what_their_phrase_says(rule, good, bad, must):
    assert all(rule.holds(v) for v in good)
    assert not any(rule.holds(v) for v in bad)
    if must:
        assert rule.must == must


@dataclass(frozen=True, kw_only=True)
class Optimizer(Group):
    lr: float = setting(POSITIVE)
    momentum: float = setting(MOMENTUM, 0.0)  # a key older runs lack


@dataclass(frozen=True, kw_only=True)
class Toy(Group):
    rounds: int = setting(integer(1))
    low: float = setting(number(0))
    high: float = setting(number(0))
    ids: list[int] = setting(list_of(integer(0), "ids"), [])
    extra: str = setting(one_of("x"), ABSENT)
    optimizer: Optimizer

    def check(self) -> None:
        require(self.low <= self.high, f"need low <= high, got {self.low}, {self.high}")


GOOD = {"rounds": 3, "low": 0.1, "high": 0.5, "optimizer": {"lr": 0.1}}


def test_parse_builds_the_typed_tree_and_fills_only_declared_defaults():
    toy = parse(Toy, GOOD)
    assert toy.rounds == 3 and toy.optimizer.lr == 0.1
    assert toy.optimizer.momentum == 0.0 and toy.ids == [] and toy.extra is ABSENT
    # to_dict leaves out what was absent and keeps the rest as given
    assert to_dict(toy) == {
        "rounds": 3,
        "low": 0.1,
        "high": 0.5,
        "ids": [],
        "optimizer": {"lr": 0.1, "momentum": 0.0},
    }
    assert parse(Toy, {**GOOD, "ids": [2]}).ids == [2]
    assert parse(Toy, {**GOOD, "ids": [1]}).ids is not parse(Toy, GOOD).ids


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rounds": 0}, "rounds must be a positive integer, got 0"),
        ({"rounds": "3"}, "rounds must be a positive integer, got '3'"),
        ({"optimizer": {"lr": -1}}, "optimizer.lr must be > 0, got -1"),
        ({"optimizer": {"lr": 1, "mom": 0}}, "optimizer.mom is not a setting here"),
        ({"optimizer": 3}, "optimizer must be a group of settings, got 3"),
        ({"typo": 1}, "typo is not a setting here"),
        ({"low": 0.9}, "need low <= high, got 0.9, 0.5"),
        ({"extra": "y"}, "extra must be one of ['x'], got 'y'"),
    ],
)
def test_parse_stops_at_the_first_bad_value_with_one_line_naming_it(change, message):
    with pytest.raises(ConfigError) as info:
        parse(Toy, {**GOOD, **change})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_a_missing_key_without_default_is_named():
    with pytest.raises(ConfigError, match=r"^rounds is missing$"):
        parse(Toy, {k: v for k, v in GOOD.items() if k != "rounds"})
    with pytest.raises(ConfigError, match=r"^optimizer\.lr is missing$"):
        parse(Toy, {**GOOD, "optimizer": {}})


def _schemas():
    from fedfomo.settings import FedFomoSettings
    from fedper.settings import FedPerSettings
    from perfedavg.settings import PerFedAvgSettings
    from pfedhn.settings import PFedHNSettings

    return [FedPerSettings, PFedHNSettings, PerFedAvgSettings, FedFomoSettings]


def test_every_leaf_of_every_package_schema_declares_its_rule():
    for schema in _schemas():
        leaves = list(leaf_fields(schema))
        assert leaves, schema
        missing = [path for path, rule in leaves if rule is None]
        assert not missing, (schema.__name__, missing)
