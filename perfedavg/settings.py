"""Per-FedAvg's settings (``conf/perfedavg.yaml``), each with its check beside it.

Every leaf is checked whichever algorithm runs; what only matters for some
(``jiang.*``'s client counts, the meta-steps of Per-FedAvg, the CNN's input)
is checked in :meth:`PerFedAvgSettings.check`. Whether batches fit the
clients' data needs the data, so ``perfedavg.main.check_batches`` does it
after loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perfedavg.dataset import PARTITIONS
from perfedavg.emnist import EMNIST_CLASSES, ORIENTATIONS
from perfedavg.jiang import REPTILE_OPTIMIZERS
from perfedavg.models import MODEL_NAMES
from pflcore.config.settings import (
    ABSENT,
    BOOLEAN,
    MOMENTUM,
    POSITIVE,
    Group,
    Rule,
    integer,
    number,
    one_of,
    parse,
    require,
    setting,
)
from pflcore.config.shared import COUNT, POSITIVE_INT, DatasetSettings, SharedSettings
from pflcore.data.node_data import without_node_data
from pflcore.local.finetune import FINETUNE_UNITS

ALGORITHMS = ("perfedavg_fo", "perfedavg_hf", "fedavg", "fedavg_ft", "local", "jiang")
META = ("perfedavg_fo", "perfedavg_hf")  # Per-FedAvg: local_steps meta-steps
ADAPTING = (*META, "fedavg_ft")  # evaluated before and after adaptation
EMNIST_KEYS = ("split", "npz_orientation")
CNN_DATASETS = ("emnist", "mnist")  # the FedLab CNN's 1x28x28 inputs
BETAS = Rule(
    lambda v: isinstance(v, list) and len(v) == 2 and all(MOMENTUM.holds(b) for b in v),
    "be two numbers in [0, 1)",
)


@dataclass(frozen=True, kw_only=True)
class PerFedAvgDataset(DatasetSettings):
    """``dataset.*`` plus ``normalize``; EMNIST's keys checked against the loader."""

    normalize: bool = setting(BOOLEAN, True)
    split: str = setting(one_of(*EMNIST_CLASSES), ABSENT)
    npz_orientation: str = setting(one_of(*ORIENTATIONS), ABSENT)

    def check(self) -> None:
        """No subsetting (sizes are ``partition.*``); EMNIST comes with its keys."""
        super().check()
        self.refuse_subset("client sizes follow partition.* (a, samples_per_client)")
        absent = [k for k in EMNIST_KEYS if getattr(self, k) is ABSENT]
        require(
            self.name != "emnist" or not absent,
            f"dataset.name=emnist lacks {absent}: select the group with "
            "dataset=emnist instead of overriding dataset.name",
        )


@dataclass(frozen=True, kw_only=True)
class Finetune(Group):
    """``finetune.*``: the evaluation-time adaptation of a received model."""

    unit: str = setting(one_of(*FINETUNE_UNITS))
    amount: int = setting(COUNT)
    lr: float = setting(POSITIVE)
    batch_size: int = setting(POSITIVE_INT)


@dataclass(frozen=True, kw_only=True)
class Partition(Group):
    """``partition.*``: Fallah et al.'s split (``a``, ``test_ratio``) or Dirichlet's."""

    name: str = setting(one_of(*PARTITIONS))
    a: int = setting(integer(2))
    test_ratio: float = setting(POSITIVE)
    samples_per_client: int = setting(integer(2))
    dirichlet_alpha: float = setting(POSITIVE)
    test_fraction: float = setting(number(0, 1, low_open=True, high_open=True))


@dataclass(frozen=True, kw_only=True)
class Model(Group):
    """``model.*``: the MLP or the FedLab CNN."""

    name: str = setting(one_of(*MODEL_NAMES))
    dropout: float = setting(MOMENTUM)  # [0, 1)


@dataclass(frozen=True, kw_only=True)
class Reptile(Group):
    """``jiang.reptile.*``: stage 2 of Jiang et al., Reptile fine-tuning."""

    rounds: int = setting(COUNT)
    inner_epochs: int = setting(POSITIVE_INT)
    optimizer: str = setting(one_of(*REPTILE_OPTIMIZERS), "client_adam")
    lr: float = setting(POSITIVE)
    betas: list[float] = setting(BETAS)
    server_lr: float = setting(POSITIVE)
    client_lr: float = setting(POSITIVE)


@dataclass(frozen=True, kw_only=True)
class Jiang(Group):
    """``jiang.*``: the held-out clients and the Reptile stage."""

    holdout_clients: int = setting(POSITIVE_INT)
    reptile: Reptile


@dataclass(frozen=True, kw_only=True)
class PerFedAvgSettings(SharedSettings):
    """Everything ``python -m perfedavg.main`` reads."""

    algorithm: str = setting(one_of(*ALGORITHMS))
    dataset: PerFedAvgDataset
    local_steps: int = setting(COUNT)
    local_epochs: int = setting(POSITIVE_INT)
    alpha: float = setting(POSITIVE)
    beta: float = setting(POSITIVE)
    delta: float = setting(POSITIVE)
    server_lr: float = setting(POSITIVE)
    server_momentum: float = setting(MOMENTUM)
    finetune: Finetune
    partition: Partition
    model: Model
    jiang: Jiang

    def check(self) -> None:
        """Meta-steps for Per-FedAvg, the CNN's input, Jiang's client counts."""
        super().check()
        require(
            self.algorithm not in META or self.local_steps >= 1,
            f"{self.algorithm} takes local_steps (tau) meta-steps per round; "
            "local_steps must be >= 1",
        )
        dataset = self.dataset
        require(
            self.model.name != "cnn"
            or (dataset.image_size == 28 and dataset.name in CNN_DATASETS),
            "model.name=cnn is the FedLab CNN for 1x28x28 images (emnist, mnist); "
            f"got dataset {dataset.name} at {dataset.image_size} px",
        )
        if self.algorithm == "jiang":
            self._check_jiang()

    def _check_jiang(self) -> None:
        """Held-out clients leave some to train, and enough for a round."""
        n, holdout = self.num_clients, self.jiang.holdout_clients
        require(
            holdout < n,
            f"jiang.holdout_clients must lie in 1..num_clients-1={n - 1}, "
            f"got {holdout!r}",
        )
        require(
            self.clients_per_round <= n - holdout,
            f"clients_per_round={self.clients_per_round} exceeds the "
            f"{n - holdout} training clients (num_clients - jiang.holdout_clients)",
        )


def parse_settings(config: dict[str, Any]) -> PerFedAvgSettings:
    """Check the composed config; the typed settings of the run."""
    return parse(PerFedAvgSettings, config)


def read_settings(config: dict[str, Any]) -> PerFedAvgSettings:
    """The typed settings of a config already checked by :func:`parse_settings`.

    For the worker side and for second reads on the launching side: the values
    only (the node's partition-file entry dropped), without the rules and the
    machine checks (resources, tracker) that belong to the launch.
    """
    return parse(PerFedAvgSettings, without_node_data(config), checked=False)
