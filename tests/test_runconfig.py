"""pflcore.config.runconfig: the config survives Flower's flat run config exactly."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given
from hypothesis import strategies as st

from pflcore.config import to_plain
from pflcore.config.runconfig import JSON_KEYS, from_run_config, to_run_config

CONF = str(Path(__file__).resolve().parents[1] / "conf")

keys = st.text(
    alphabet=st.characters(blacklist_characters=".,", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=8,
).filter(lambda k: k != JSON_KEYS)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.lists(st.integers() | st.text(max_size=3), max_size=3)
)
configs = st.recursive(
    leaves, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=20
).filter(lambda c: isinstance(c, dict))


@given(configs)
def test_any_nested_config_round_trips_exactly(config):
    flat = to_run_config(config)
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
    back = from_run_config(flat)
    assert json.dumps(back, sort_keys=True) == json.dumps(config, sort_keys=True)
    assert back == config


def test_scalars_stay_scalars_and_the_rest_is_json():
    flat = to_run_config(
        {"lr": 0.05, "dataset": {"root": "data", "path": None}, "ids": [1, 2], "g": {}}
    )
    assert flat["lr"] == 0.05 and flat["dataset.root"] == "data"
    assert (
        flat["dataset.path"] == "null" and flat["ids"] == "[1, 2]" and flat["g"] == "{}"
    )
    assert set(flat[JSON_KEYS].split(",")) == {"dataset.path", "ids", "g"}


def test_a_string_that_looks_like_json_stays_a_string():
    config = {"name": "[1, 2]", "other": "null"}
    assert from_run_config(to_run_config(config)) == config


def test_a_dotted_key_is_refused():
    with pytest.raises(ValueError, match="cannot be flattened"):
        to_run_config({"a": {"b.c": 1}})


@pytest.mark.parametrize("package", ["fedper", "pfedhn", "perfedavg", "fedfomo"])
def test_every_package_default_config_round_trips(package):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        config = to_plain(compose(package))
    assert from_run_config(to_run_config(config)) == config
