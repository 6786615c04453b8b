"""FedPer's settings (``conf/fedper.yaml``), each with its check beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedper.models import MODEL_NAMES
from pflcore.config import ConfigError
from pflcore.config.settings import (
    ABSENT,
    BOOLEAN,
    Group,
    integer,
    number,
    one_of,
    parse,
    require,
    setting,
)
from pflcore.config.shared import (
    COUNT,
    POSITIVE_INT,
    DatasetSettings,
    EpochFinetune,
    SharedSettings,
)
from pflcore.data.node_data import without_node_data

ALGORITHMS = ("fedper", "fedavg", "fedavg_ft", "local")
HEAD_LAYERS = range(1, 5)  # K_P: 1 = classifier only, 4 = the most any network has
BASE_BUFFERS = one_of("aggregate", "local", must="be aggregate or local")
# The keys of conf/dataset/flickr.yaml that the other dataset groups lack.
FLICKR_KEYS = (
    "folder",
    "image_folder",
    "labels_file",
    "min_ratings",
    "max_ratings",
    "min_per_score",
    "test_fraction",
)


@dataclass(frozen=True, kw_only=True)
class FedPerDataset(DatasetSettings):
    """``dataset.*``; FedPer always splits each client's data for testing."""

    # FedPer's partition reads both for every dataset: neither may be null.
    test_fraction: float = setting(number(0, 1, low_open=True, high_open=True), ABSENT)
    classes_per_client: int = setting(POSITIVE_INT, ABSENT)

    def check(self) -> None:
        """FLICKR-AES comes from its own group; its rating bounds in order."""
        super().check()
        if self.name != "flickr":
            return
        absent = [k for k in FLICKR_KEYS if getattr(self, k) is ABSENT]
        if absent:
            raise ConfigError(
                f"dataset.name=flickr lacks {absent}: select the group with "
                "dataset=flickr instead of overriding dataset.name"
            )
        low, high = self.min_ratings, self.max_ratings
        require(
            low < high,
            "dataset.min_ratings and dataset.max_ratings must be integers with "
            f"0 <= min_ratings < max_ratings, got {low!r} and {high!r}",
        )


@dataclass(frozen=True, kw_only=True)
class FedPerModel(Group):
    """``model.*``: the network and which of its units stay personal."""

    name: str = setting(one_of(*MODEL_NAMES))
    num_blocks: int = setting(one_of(11, 13), ABSENT)  # MobileNet-v1 only
    num_head_layers: int = setting(integer())  # K_P; its range: FedPerSettings
    base_buffers: str = setting(BASE_BUFFERS)
    linear_base: bool = setting(BOOLEAN, False)


@dataclass(frozen=True, kw_only=True)
class FedPerSettings(SharedSettings):
    """Everything ``python -m fedper.main`` reads."""

    algorithm: str = setting(one_of(*ALGORITHMS))
    local_epochs: int = setting(POSITIVE_INT)
    finetune: EpochFinetune
    head_finetune_epochs: int = setting(COUNT, 0)
    model: FedPerModel
    dataset: FedPerDataset

    def check(self) -> None:
        """K_P in range where it splits the network; head fine-tuning for FedPer."""
        super().check()
        k_p = self.model.num_head_layers
        require(
            self.algorithm != "fedper" or k_p in HEAD_LAYERS,
            f"model.num_head_layers (K_P) must lie in 1..4, got {k_p}",
        )
        require(
            self.head_finetune_epochs == 0 or self.algorithm == "fedper",
            "head_finetune_epochs (paper App. A.3) fine-tunes FedPer's personal "
            f"layers; it needs algorithm=fedper, got {self.algorithm!r}",
        )
        require(
            not (self.model.linear_base and self.model.name == "lenet"),
            "model.linear_base is the paper's ablation of its networks; "
            "model=lenet has none",
        )
        require(
            not self.model.linear_base or k_p in HEAD_LAYERS,
            "model.linear_base replaces the units below the last "
            "model.num_head_layers (K_P) ones; K_P must lie in 1..4, "
            f"got {k_p}",
        )


def parse_settings(config: dict[str, Any]) -> FedPerSettings:
    """Check the composed config; the typed settings of the run."""
    return parse(FedPerSettings, config)


def read_settings(config: dict[str, Any]) -> FedPerSettings:
    """The typed settings of a config already checked by :func:`parse_settings`.

    For the worker side and for second reads on the launching side: the values
    only (the node's partition-file entry dropped), without the rules and the
    machine checks (resources, tracker) that belong to the launch.
    """
    return parse(FedPerSettings, without_node_data(config), checked=False)
