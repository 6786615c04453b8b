"""FedFomo's settings (``conf/fedfomo.yaml``), each with its check beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedfomo.dataset import LATENT_FEATURES, PARTITION_KINDS, TEST_SPLITS
from fedfomo.models import MODEL_NAMES
from pflcore.config.settings import (
    BOOLEAN,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    TEXT,
    Group,
    Rule,
    integer,
    nullable,
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

ALGORITHMS = ("fedfomo", "fedavg", "fedavg_ft", "local")
NORMS = ("l1", "l2", "l2_squared")  # fomo.norm (fedfomo.algorithm.model_distance)
MIN_IMAGE_SIZE = 22  # the paper's CNN (fedfomo.models.TFCNN) needs at least this
IMAGE_SIZE = Rule(
    integer(MIN_IMAGE_SIZE).holds, f"be >= {MIN_IMAGE_SIZE} for the paper's CNN"
)
VALIDATION_SHARE = Rule(
    number(0, 1, low_open=True, high_open=True).holds,
    "lie in (0, 1) (FedFomo weighs models on it)",
)


@dataclass(frozen=True, kw_only=True)
class FedFomoDataset(DatasetSettings):
    """``dataset.*`` plus where each client's test split comes from."""

    image_size: int = setting(IMAGE_SIZE)
    test_split: str = setting(one_of(*TEST_SPLITS), "carve")
    test_path: str | None = setting(nullable(TEXT), None)

    def check(self) -> None:
        """No subsetting: the pool is sized by ``partition.pool_fraction``."""
        super().check()
        self.refuse_subset("use partition.pool_fraction")


@dataclass(frozen=True, kw_only=True)
class Fomo(Group):
    """``fomo.*``: how a FedFomo client weighs the models it downloads."""

    num_candidates: int = setting(POSITIVE_INT)  # M, own model included
    epsilon_initial: float = setting(number(0, 1))
    epsilon_decay: float = setting(number(0, 1))
    norm: str = setting(one_of(*NORMS))
    num_clusters: int = setting(COUNT)
    global_candidate: bool = setting(BOOLEAN)


@dataclass(frozen=True, kw_only=True)
class Embedding(Group):
    """``partition.embedding.*``: the CNN whose features the latent split clusters."""

    epochs: int = setting(POSITIVE_INT)
    batch_size: int = setting(POSITIVE_INT)
    lr: float = setting(POSITIVE)
    width: int = setting(POSITIVE_INT)
    cache_dir: str = setting(TEXT)


@dataclass(frozen=True, kw_only=True)
class FomoModel(Group):
    """``model.*``: the authors' CNN, or the shared protocol's ``lenet``."""

    name: str = setting(one_of(*MODEL_NAMES), "tf_cnn")


@dataclass(frozen=True, kw_only=True)
class FomoPartition(Group):
    """``partition.*``: pathological shards or latent (clustered) distributions."""

    kind: str = setting(one_of(*PARTITION_KINDS))
    shards_per_client: int = setting(POSITIVE_INT)
    num_distributions: int = setting(POSITIVE_INT)
    features: str = setting(one_of(*LATENT_FEATURES))
    embedding_path: str | None = setting(nullable(TEXT), None)
    embedding: Embedding
    pca_dim: int = setting(POSITIVE_INT)
    val_fraction: float = setting(VALIDATION_SHARE)
    pool_fraction: float = setting(FRACTION)

    def check(self) -> None:
        """A latent split on given embeddings needs their file."""
        require(
            self.kind != "latent"
            or self.features != "embedding"
            or bool(self.embedding_path),
            "partition.features=embedding needs partition.embedding_path (.npy)",
        )


@dataclass(frozen=True, kw_only=True)
class FedFomoSettings(SharedSettings):
    """Everything ``python -m fedfomo.main`` reads."""

    algorithm: str = setting(one_of(*ALGORITHMS))
    local_epochs: int = setting(POSITIVE_INT)
    lr_decay: float = setting(FRACTION)  # lr x lr_decay per round ...
    lr_min: float = setting(NON_NEGATIVE)  # ... floored here
    fomo: Fomo
    model: FomoModel
    partition: FomoPartition
    finetune: EpochFinetune
    dataset: FedFomoDataset

    def check(self) -> None:
        """Candidates, clusters and latent distributions fit the population."""
        super().check()
        n, fomo = self.num_clients, self.fomo
        require(
            fomo.num_candidates <= n,
            "fomo.num_candidates (M, own model included) must lie in "
            f"1..num_clients={n}, got {fomo.num_candidates!r}",
        )
        require(
            fomo.num_clusters <= n,
            f"fomo.num_clusters must lie in 0..num_clients={n}, "
            f"got {fomo.num_clusters!r}",
        )
        k = self.partition.num_distributions
        require(
            self.partition.kind != "latent" or n % k == 0,
            f"partition.num_distributions must divide num_clients={n}, got {k!r}",
        )


def parse_settings(config: dict[str, Any]) -> FedFomoSettings:
    """Check the composed config; the typed settings of the run."""
    return parse(FedFomoSettings, config)


def read_settings(config: dict[str, Any]) -> FedFomoSettings:
    """The typed settings of a config already checked by :func:`parse_settings`.

    For the worker side and for second reads on the launching side: the values
    only (the node's partition-file entry dropped), without the rules and the
    machine checks (resources, tracker) that belong to the launch.
    """
    return parse(FedFomoSettings, without_node_data(config), checked=False)
