"""The settings every package shares (``conf/<package>.yaml``'s common keys).

Each package's settings class (``fedper.settings.FedPerSettings``, ...)
derives from :class:`SharedSettings`, narrows ``algorithm`` to its own names
and adds its keys. The rules here are the suite's one statement of what the
shared keys accept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pflcore.config import AVERAGING_RULES
from pflcore.config.settings import (
    ABSENT,
    BOOLEAN,
    EXISTING_FOLDER,
    FRACTION,
    MOMENTUM,
    NAME,
    NON_NEGATIVE,
    POSITIVE,
    TEXT,
    Group,
    Rule,
    integer,
    is_number,
    nullable,
    number,
    one_of,
    require,
    setting,
)

POSITIVE_INT = integer(1)
COUNT = integer(0)  # 0 allowed ("never", "off")
# NumPy's generators take no negative seed, legacy ones none above 2**32 - 1
SEED = integer(0, 2**32 - 1)
RAY_SHARE = 1e-4  # Ray refuses a smaller share of a resource (at actor creation)


@dataclass(frozen=True, kw_only=True)
class ClientResources(Group):
    """Ray resources of one client (``client_resources.*``)."""

    num_cpus: float = setting(number(0, low_open=True))
    num_gpus: float = setting(number(0, 1))

    def check(self) -> None:
        """Shares Ray accepts: none below its 0.0001 granularity."""
        for name in ("num_cpus", "num_gpus"):
            share = getattr(self, name)
            require(
                share == 0 or share >= RAY_SHARE,
                f"client_resources.{name} must be 0 or at least {RAY_SHARE:g} "
                f"(Ray's smallest share), got {share!r}",
            )

    def fit_this_machine(self) -> None:
        """The request must fit the machine that starts Ray."""
        import torch

        available = os.cpu_count() or 1
        require(
            self.num_cpus <= available,
            f"client_resources.num_cpus must lie in (0, {available}] on this "
            f"machine, got {self.num_cpus!r}",
        )
        require(
            self.num_gpus == 0 or torch.cuda.is_available(),
            f"client_resources.num_gpus={self.num_gpus} but no CUDA device is "
            "visible; set client_resources.num_gpus=0",
        )

    def fit_cluster(self, address: str) -> None:
        """The request must fit one node of the Ray cluster at ``address``."""
        from pflcore.config.cluster import cluster_nodes

        nodes = cluster_nodes(address)
        fits = [
            n
            for n in nodes
            if n.get("CPU", 0) >= self.num_cpus
            and (self.num_gpus == 0 or n.get("GPU", 0) >= self.num_gpus)
        ]
        cpus = [n.get("CPU", 0) for n in nodes]
        gpus = [n.get("GPU", 0) for n in nodes]
        require(
            bool(fits),
            f"client_resources (num_cpus={self.num_cpus}, num_gpus={self.num_gpus}) "
            f"fit no node of the Ray cluster at {address} (CPUs per node {cpus}, "
            f"GPUs per node {gpus})",
        )


@dataclass(frozen=True, kw_only=True)
class ClientFailure(Group):
    """``inject.client_failure``: make one client fail once (tests only)."""

    partition: int | None = setting(nullable(integer(0)))
    round: int | None = setting(nullable(integer(1)))
    stage: str = setting(one_of("train", "evaluate", "checkpoint"))
    mode: str = setting(one_of("raise", "timeout"))
    sleep_s: float = setting(NON_NEGATIVE)


@dataclass(frozen=True, kw_only=True)
class Inject(Group):
    """Test-only fault injection (``inject.*``); never set in real runs."""

    kill_after_round: int | None = setting(nullable(integer(1)))
    client_failure: ClientFailure


@dataclass(frozen=True, kw_only=True)
class SharedPartition(Group):
    """``protocol.*``: the shared protocol's partition, the same for every package.

    ``partition: null`` (the default) keeps the package's own partition. Set,
    every client draws ``samples_per_client`` images of the training set
    (``classes``: ``classes_per_client`` distinct classes in equal shares;
    ``dirichlet``: a Dirichlet(``alpha``) label mix), cut per class into
    train, validation and test (:mod:`pflcore.data.shared_partition`).
    """

    partition: str | None = setting(nullable(one_of("classes", "dirichlet")), None)
    classes_per_client: int = setting(POSITIVE_INT, 2)
    alpha: float = setting(number(0, low_open=True), 0.3)
    samples_per_client: int = setting(integer(2), 500)
    val_fraction: float = setting(number(0, 1, low_open=True, high_open=True), 0.2)
    test_fraction: float = setting(number(0, 1, low_open=True, high_open=True), 0.2)

    def check(self) -> None:
        """The three splits leave room for training."""
        require(
            self.val_fraction + self.test_fraction < 1,
            "protocol.val_fraction + protocol.test_fraction must be below 1, got "
            f"{self.val_fraction} + {self.test_fraction}",
        )


@dataclass(frozen=True, kw_only=True)
class DatasetSettings(Group):
    """``dataset.*``: the keys of ``conf/dataset/*.yaml``.

    Keys only some groups have (FLICKR-AES's, EMNIST's) default to
    :data:`ABSENT`; a package's subclass adds its own.
    """

    name: str = setting(NAME)
    root: str = setting(TEXT)
    source: str = setting(one_of("default", "npz"), ABSENT)
    path: str | None = setting(nullable(TEXT), ABSENT)
    download: bool = setting(BOOLEAN, ABSENT)
    pool_test: bool | None = setting(nullable(BOOLEAN), ABSENT)
    test_fraction: float | None = setting(
        nullable(number(0, 1, low_open=True, high_open=True)), ABSENT
    )
    classes_per_client: int | None = setting(nullable(POSITIVE_INT), ABSENT)
    class_assignment: str | None = setting(
        nullable(one_of("random", "balanced")), ABSENT
    )
    image_size: int = setting(POSITIVE_INT)
    crop_padding: int = setting(COUNT)
    flip: bool = setting(BOOLEAN)
    subset_fraction: float = setting(FRACTION, 1.0)
    # EMNIST (conf/dataset/emnist.yaml)
    split: str = setting(TEXT, ABSENT)
    npz_orientation: str = setting(TEXT, ABSENT)
    # FLICKR-AES (conf/dataset/flickr.yaml; FedPer only)
    folder: str = setting(TEXT, ABSENT)
    image_folder: str = setting(TEXT, ABSENT)
    labels_file: str = setting(TEXT, ABSENT)
    min_ratings: int = setting(COUNT, ABSENT)
    max_ratings: int = setting(COUNT, ABSENT)
    min_per_score: int = setting(COUNT, ABSENT)

    def check(self) -> None:
        """Padding no wider than the image it pads."""
        self.check_padding()

    def check_padding(self) -> None:
        """``crop_padding`` at most ``image_size`` (more pads nothing but zeros)."""
        require(
            self.crop_padding <= self.image_size,
            f"dataset.crop_padding must lie in 0..dataset.image_size="
            f"{self.image_size}, got {self.crop_padding!r}",
        )

    def refuse_subset(self, instead: str) -> None:
        """For packages that size their own data: ``subset_fraction`` must stay 1."""
        require(
            self.subset_fraction == 1,
            f"dataset.subset_fraction={self.subset_fraction} is not used by this "
            f"package; {instead}",
        )


@dataclass(frozen=True, kw_only=True)
class EpochFinetune(Group):
    """``finetune.*``: FedAvg + FT's epochs of SGD on a copy of the global model."""

    epochs: int = setting(COUNT)
    lr: float = setting(POSITIVE)


def tracker(name: str | None) -> bool:
    from pflcore.config.trackers import TRACKERS

    return name is None or name in TRACKERS


TRACKING = Rule(tracker, "be one of none, tensorboard, wandb")


@dataclass(frozen=True, kw_only=True)
class SharedSettings(Group):
    """The top-level keys of every package.

    Subclasses redeclare ``algorithm`` with their names and ``dataset`` with
    their :class:`DatasetSettings`.
    """

    algorithm: str = setting(TEXT)
    num_clients: int = setting(POSITIVE_INT)
    clients_per_round: int = setting(POSITIVE_INT)
    num_rounds: int = setting(POSITIVE_INT)
    batch_size: int = setting(POSITIVE_INT)
    eval_batch_size: int = setting(POSITIVE_INT)
    lr: float = setting(POSITIVE)
    momentum: float = setting(MOMENTUM)
    weight_decay: float = setting(NON_NEGATIVE)
    seed: int = setting(SEED)
    averaging: str = setting(one_of(*AVERAGING_RULES))
    eval_every: int = setting(COUNT)
    tuning: bool = setting(BOOLEAN, False)
    protocol: SharedPartition
    deterministic: bool = setting(BOOLEAN, True)
    client_resources: ClientResources
    checkpoint_every: int = setting(COUNT, 0)
    resume: str | None = setting(EXISTING_FOLDER, None)
    on_client_failure: str = setting(one_of("stop", "tolerate"), "stop")
    inject: Inject
    timeout_s: float = setting(POSITIVE)
    verbose: bool = setting(BOOLEAN, False)
    tracking: str | None = setting(TRACKING, "none")
    ray_address: str | None = setting(nullable(NAME), None)
    launcher: str = setting(one_of("embedded", "flwr"), "embedded")
    superlink: str = setting(NAME, "local")
    dataset: DatasetSettings

    def check(self) -> None:
        """Clients per round within the population; resources that fit; the tracker."""
        require(
            self.clients_per_round <= self.num_clients,
            f"clients_per_round must lie in 1..num_clients={self.num_clients}, "
            f"got {self.clients_per_round!r}",
        )
        # Under launcher=flwr the SuperLink's engine places the clients, and this
        # check also runs in its processes; pflcore.run.launch checks a local
        # simulation's shares against this machine before submitting.
        if self.launcher == "embedded":
            if self.ray_address is None:
                self.client_resources.fit_this_machine()
            else:  # the cluster's nodes, not the launching machine, run the clients
                self.client_resources.fit_cluster(self.ray_address)
        from pflcore.config.trackers import check_tracking

        check_tracking(self.tracking)


__all__ = [
    "AVERAGING_RULES",
    "COUNT",
    "POSITIVE_INT",
    "SEED",
    "ClientFailure",
    "ClientResources",
    "DatasetSettings",
    "EpochFinetune",
    "Inject",
    "SharedPartition",
    "SharedSettings",
    "is_number",
]
