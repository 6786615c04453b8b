"""What every package's settings refuse the same way."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pflcore.config import ConfigError, to_plain

CONF = Path(__file__).resolve().parents[1] / "conf"


def composed(package: str, *overrides: str) -> dict:
    os.environ.setdefault("PFL_DATA_ROOT", "datasets")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_plain(compose(package, overrides=list(overrides)))


def parse_settings(package: str):
    import importlib

    return importlib.import_module(f"{package}.settings").parse_settings


@pytest.mark.parametrize(
    ("package", "instead"),
    [
        ("pfedhn", "partition.* (val_size, test_size)"),
        ("perfedavg", "partition.* (a, samples_per_client)"),
        ("fedfomo", ""),
    ],
)
def test_packages_that_size_their_own_data_refuse_a_subset_fraction(package, instead):
    parse = parse_settings(package)
    parse(composed(package))  # the default (1.0) passes
    with pytest.raises(ConfigError) as info:
        parse(composed(package, "dataset.subset_fraction=0.5"))
    assert str(info.value).startswith("dataset.subset_fraction=0.5 is not used")
    assert instead in str(info.value)


@pytest.mark.parametrize("package", ["fedper", "pfedhn", "perfedavg", "fedfomo"])
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_rounds=0", "num_rounds must be a positive integer, got 0"),
        ("lr=-0.1", "lr must be > 0, got -0.1"),
        ("momentum=1.0", "momentum must lie in [0, 1), got 1.0"),
        ("averaging=median", "averaging must be one of ['samples', 'uniform']"),
        ("client_resources.num_gpus=1.5", "client_resources.num_gpus must lie in"),
        ("on_client_failure=retry", "on_client_failure must be one of"),
        ("inject.client_failure.stage=test", "inject.client_failure.stage must be one"),
        ("+dataset.colour=red", "dataset.colour is not a setting here"),
    ],
)
def test_every_package_refuses_a_bad_shared_setting_in_one_line(
    package, override, message
):
    with pytest.raises(ConfigError) as info:
        parse_settings(package)(composed(package, override))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
