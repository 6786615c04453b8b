import pytest

from pflcore.config import ConfigError, reject_subset


def test_packages_that_size_their_own_data_refuse_a_subset_fraction():
    reject_subset({"dataset": {"subset_fraction": 1.0}}, "use x")
    reject_subset({"dataset": {}}, "use x")
    with pytest.raises(ConfigError, match=r"subset_fraction=0.5 is not used .*use x"):
        reject_subset({"dataset": {"subset_fraction": 0.5}}, "use x")
