"""pFedHN's settings (``conf/pfedhn.yaml``), each with its check beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pfedhn.models import TARGETS
from pflcore.config import ConfigError
from pflcore.config.settings import (
    ABSENT,
    MOMENTUM,
    NON_NEGATIVE,
    POSITIVE,
    Group,
    Rule,
    integer,
    is_int,
    list_of,
    nullable,
    one_of,
    parse,
    require,
    setting,
)
from pflcore.config.shared import COUNT, POSITIVE_INT, DatasetSettings, SharedSettings
from pflcore.data.node_data import without_node_data

ALGORITHMS = ("pfedhn", "pfedhn_pc", "fedavg", "fedavg_ft", "local")
HN_LR = {"pfedhn": 1e-2, "pfedhn_pc": 5e-2}  # the authors' defaults
FEDPER_PARTITION_KEYS = (
    "pool_test",
    "test_fraction",
    "classes_per_client",
    "class_assignment",
)
MAX_THREADS = 1024  # more than any machine's cores
THREADS = Rule(
    lambda v: v == "auto" or (is_int(v) and 1 <= v <= MAX_THREADS),
    f"be 'auto' or an integer in 1..{MAX_THREADS}",
)


def is_device(value: Any) -> bool:
    """Whether ``value`` names a CPU or CUDA device as Torch spells it."""
    if not isinstance(value, str):
        return False
    kind, _, index = value.partition(":")
    if kind == "cpu":
        return index == ""
    return kind == "cuda" and (index == "" or (index.isdigit() and index.isascii()))


DEVICE = Rule(is_device, "be cpu, cuda or cuda:N")


@dataclass(frozen=True, kw_only=True)
class PFedHNDataset(DatasetSettings):
    """``dataset.*``; FedPer's partition keys must stay null (see ``partition``)."""

    def check(self) -> None:
        """FedPer's partition keys unset; no subsetting (sizes are ``partition.*``)."""
        super().check()
        stray = [
            k for k in FEDPER_PARTITION_KEYS if getattr(self, k) not in (None, ABSENT)
        ]
        if stray:
            raise ConfigError(
                f"dataset.{stray[0]} is FedPer's partition setting; pFedHN's "
                "partition is set under partition.* (classes_per_client, val_size, "
                "test_source, ...)"
            )
        self.refuse_subset("client sizes follow partition.* (val_size, test_size)")


@dataclass(frozen=True, kw_only=True)
class TargetModel(Group):
    """``model.*``: the target network and the hypernetwork's shape."""

    target: str = setting(one_of(*TARGETS))
    n_kernels: int = setting(POSITIVE_INT)
    hidden_dim: int = setting(POSITIVE_INT)
    n_hidden: int = setting(COUNT)
    embed_dim: int | None = setting(nullable(POSITIVE_INT))


@dataclass(frozen=True, kw_only=True)
class HyperOptimizer(Group):
    """``hn.*``: the server's hypernetwork optimizer (null: the authors' default)."""

    lr: float | None = setting(nullable(POSITIVE))
    embed_lr: float | None = setting(nullable(POSITIVE))
    momentum: float = setting(MOMENTUM)
    weight_decay: float = setting(NON_NEGATIVE)
    clip: float = setting(POSITIVE)


@dataclass(frozen=True, kw_only=True)
class HNPartition(Group):
    """``partition.*``: the authors' ``dataset.py`` split."""

    classes_per_client: int = setting(POSITIVE_INT)
    low: float = setting(POSITIVE)
    high: float = setting(POSITIVE)
    val_size: int = setting(POSITIVE_INT)
    test_source: str = setting(one_of("official", "train"))
    test_size: int = setting(POSITIVE_INT)

    def check(self) -> None:
        """The class-share bounds in order."""
        require(
            self.low <= self.high,
            f"need 0 < partition.low <= partition.high, got {self.low} and {self.high}",
        )


@dataclass(frozen=True, kw_only=True)
class NovelSizes(Group):
    """``novel.sizes.*``: images per split of each Dirichlet-drawn novel client."""

    train: int = setting(POSITIVE_INT, 200)
    val: int = setting(POSITIVE_INT, 50)
    test: int = setting(POSITIVE_INT, 50)


@dataclass(frozen=True, kw_only=True)
class Novel(Group):
    """``novel.*``: clients held out of training, fitted by their embedding only."""

    clients: list[int] = setting(list_of(integer(0), "partition-ids"))
    rounds: int = setting(COUNT)
    lr: float | None = setting(nullable(POSITIVE))
    dirichlet: list[float] = setting(list_of(POSITIVE, "concentrations > 0"), [])
    per_concentration: int = setting(POSITIVE_INT, 1)
    sizes: NovelSizes

    @property
    def drawn(self) -> int:
        """How many novel clients ``dirichlet`` draws (the last partition-ids)."""
        return len(self.dirichlet) * self.per_concentration

    def held_out(self, num_clients: int) -> list[int]:
        """The novel partition-ids: ``clients``, or the drawn ones."""
        if self.dirichlet:
            return list(range(num_clients - self.drawn, num_clients))
        return list(self.clients)


@dataclass(frozen=True, kw_only=True)
class Finetune(Group):
    """``finetune.*``: FedAvg + FT adapts a copy of the global model before testing."""

    steps: int = setting(COUNT, 50)
    lr: float = setting(POSITIVE, 5.0e-3)


@dataclass(frozen=True, kw_only=True)
class PFedHNSettings(SharedSettings):
    """Everything ``python -m pfedhn.main`` reads."""

    algorithm: str = setting(one_of(*ALGORITHMS))
    local_steps: int = setting(POSITIVE_INT)
    clip: float = setting(POSITIVE)
    normalize: str = setting(one_of("paper", "data"))
    model: TargetModel
    hn: HyperOptimizer
    partition: HNPartition
    novel: Novel
    dataset: PFedHNDataset
    finetune: Finetune
    server_device: str = setting(DEVICE)
    client_threads: int | str = setting(THREADS)

    def check(self) -> None:
        """Held-out clients valid and leaving trainers; see check_server_device."""
        super().check()
        n, clients = self.num_clients, self.novel.clients
        require(
            all(j < n for j in clients),
            f"novel.clients must list partition-ids in 0..{n - 1}, got {clients!r}",
        )
        if self.novel.dirichlet:
            drawn = self.novel.held_out(n)
            require(
                not clients or sorted(clients) == drawn,
                f"novel.dirichlet draws novel clients {drawn[0]}..{drawn[-1]}; leave "
                f"novel.clients empty (or list those), got {clients}",
            )
            clients = drawn
        require(
            len(set(clients)) == len(clients) and len(clients) < n,
            "novel.clients must be distinct and leave some client to train, "
            f"got {clients}",
        )
        require(
            not clients or self.algorithm != "local",
            "novel clients never train, so Local-only has no model for them; use "
            "algorithm=pfedhn, pfedhn_pc, fedavg or fedavg_ft",
        )
        require(
            not clients or self.algorithm not in HN_LR or self.novel.rounds >= 1,
            "novel.clients are set: novel.rounds must be >= 1",
        )
        require(
            self.clients_per_round <= n - len(clients),
            f"clients_per_round={self.clients_per_round} exceeds the "
            f"{n - len(clients)} clients that train",
        )

    @property
    def target_has_head(self) -> bool:
        """Whether the target carries its classifier (all but ``pfedhn_pc``)."""
        return self.algorithm != "pfedhn_pc"

    def check_server_device(self) -> None:
        """The hypernetwork's device must exist on the machine that runs the server.

        Not part of :meth:`check`: a client parses the same settings in a Ray
        worker, which sees no GPU unless it was given a share.
        """
        require(
            not self.server_device.startswith("cuda") or torch.cuda.is_available(),
            f"server_device={self.server_device!r} but CUDA is not available",
        )
        _, _, index = self.server_device.partition(":")
        count = torch.cuda.device_count()
        require(
            index == "" or int(index) < count,
            f"server_device={self.server_device!r} but this machine has {count} "
            "CUDA devices",
        )


def parse_settings(config: dict[str, Any]) -> PFedHNSettings:
    """Check the composed config; the typed settings of the run."""
    return parse(PFedHNSettings, config)


def read_settings(config: dict[str, Any]) -> PFedHNSettings:
    """The typed settings of a config already checked by :func:`parse_settings`.

    For the worker side and for second reads on the launching side: the values
    only (the node's partition-file entry dropped), without the rules and the
    machine checks (resources, tracker, server device) that belong to the
    launch.
    """
    return parse(PFedHNSettings, without_node_data(config), checked=False)
