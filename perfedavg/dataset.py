"""The two papers' partitions.

``fallah`` (Per-FedAvg, Fallah et al. 2020, ALGORITHMS 4.2): with the classes
cut into a first and a second half (0-4 and 5-9 for ten classes), half of the
users (partition-ids ``0 .. n//2 - 1``) get ``a`` images of each first-half
class; every other user gets ``a/2`` images of one first-half class and ``2a``
of one second-half class. The (first, second) class pairs of those users cycle
through all combinations (so no class is over-drawn) and are dealt to the
users in a seeded order. Each user's test split is drawn "the same way": for
every class it holds, ``round(test_ratio x count)`` further images of that
class. Images come from the pooled official train and test splits, without
replacement.

``dirichlet`` (the Jiang et al. pipeline on data without writer ids, e.g.
EMNIST-letters): every client draws label proportions from Dirichlet(alpha)
and then ``samples_per_client`` images with those proportions (renormalised
over the classes not yet used up), without replacement; each client's images
are split per class into train and test (``test_fraction``; 0.2 is the
held-out clients' 80/20 personalization split).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from perfedavg.emnist import load_emnist
from pflcore.data.client_data import ClientData
from pflcore.data.images import ImageData, load_dataset
from pflcore.data.label_skew import ClassPools, dirichlet_parts
from pflcore.data.partition import (
    ClientSplit,
    PartitionError,
    check_min_samples,
    split_train_test,
)
from pflcore.data.shared_partition import shared_client_data

if TYPE_CHECKING:
    from perfedavg.settings import Partition, PerFedAvgDataset
    from pflcore.config.shared import SharedPartition

PARTITIONS = ("fallah", "dirichlet")

# Seed streams of the partitions, as offsets from the run seed (fixed: they
# define the partitions): the class pools' draws, the train/test split.
POOLS_STREAM, SPLIT_STREAM = 1, 2


def load_image_data(dataset: PerFedAvgDataset) -> ImageData:
    """Load the ``dataset.*`` settings' data (EMNIST via :mod:`perfedavg.emnist`)."""
    if dataset.name == "emnist":
        return load_emnist(
            dataset.root,
            dataset.split,
            dataset.source,
            dataset.path,
            dataset.npz_orientation,
        )
    return load_dataset(
        dataset.name,
        dataset.root,
        dataset.source,
        dataset.path,
        dataset.download,
    )


def partition_fallah(
    labels: np.ndarray,
    num_classes: int,
    num_clients: int,
    a: int,
    test_ratio: float,
    seed: int,
) -> ClientSplit:
    """Per-FedAvg's partition (see the module docstring).

    Parameters
    ----------
    labels : numpy.ndarray
        Pooled labels.
    num_classes : int
        Number of classes (at least 2).
    num_clients : int
        Number of users n (at least 2).
    a : int
        Images per class of the first-half users (196 for MNIST, 68 for CIFAR-10).
    test_ratio : float
        Test images per training image, per class held.
    seed : int
        Seed of the pair dealing and the draws.

    Raises
    ------
    PartitionError
        If a class runs out of images or a setting is impossible.
    """
    if num_clients < 2 or num_classes < 2:
        raise PartitionError(
            "the fallah partition needs at least 2 clients and 2 classes"
        )
    if a < 2:
        raise PartitionError(f"partition.a must be >= 2, got {a}")
    if test_ratio <= 0:
        raise PartitionError(f"partition.test_ratio must be > 0, got {test_ratio}")
    first = num_classes // 2
    second = num_classes - first
    half = num_clients // 2
    others = num_clients - half
    rng = np.random.default_rng(seed)
    # Walk the (first, second) class grid diagonal by diagonal: any run of
    # consecutive users spreads evenly over the classes of both halves.
    pairs = [(i % first, first + (i + i // first) % second) for i in range(others)]
    pairs = [pairs[i] for i in rng.permutation(others)]
    holdings: list[list[tuple[int, int]]] = [
        [(c, a) for c in range(first)] for _ in range(half)
    ]
    holdings += [[(lo, round(a / 2)), (hi, 2 * a)] for lo, hi in pairs]
    pools = ClassPools(labels, num_classes, np.random.default_rng(seed + POOLS_STREAM))
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for held in holdings:
        tr = [pools.take(c, n) for c, n in held]
        te = [pools.take(c, max(1, round(test_ratio * n))) for c, n in held]
        train.append(np.sort(np.concatenate(tr)))
        test.append(np.sort(np.concatenate(te)))
    return ClientSplit(train=train, test=test)


def partition_dirichlet(
    labels: np.ndarray,
    num_classes: int,
    num_clients: int,
    samples_per_client: int,
    alpha: float,
    test_fraction: float,
    seed: int,
) -> ClientSplit:
    """Equal-sized clients with Dirichlet(alpha) label mixes (module docstring).

    Raises
    ------
    PartitionError
        If the data cannot supply every client, or a setting is impossible.
    """
    rng = np.random.default_rng(seed)
    pools = ClassPools(labels, num_classes, np.random.default_rng(seed + POOLS_STREAM))
    parts = dirichlet_parts(
        labels, num_classes, num_clients, samples_per_client, alpha, rng, pools
    )
    return split_train_test(parts, test_fraction, seed + SPLIT_STREAM)


def build_client_data(
    dataset: PerFedAvgDataset,
    partition: Partition,
    num_clients: int,
    seed: int,
    protocol: SharedPartition | None = None,
) -> ClientData:
    """Load the configured dataset and partition it.

    Parameters
    ----------
    dataset : perfedavg.settings.PerFedAvgDataset
        The ``dataset.*`` settings (``name``, ``root``, ``source``, ``path``,
        ``pool_test``, ...).
    partition : perfedavg.settings.Partition
        The ``partition.*`` settings: ``name`` (``fallah`` or ``dirichlet``)
        and its values (``a``, ``test_ratio``; ``samples_per_client``,
        ``dirichlet_alpha``, ``test_fraction``).
    num_clients : int
        Number of clients.
    seed : int
        Partition seed.
    protocol : pflcore.config.shared.SharedPartition, optional
        The ``protocol.*`` settings: with ``protocol.partition`` set, the
        shared protocol's clients (training set only) replace the package's
        partition and ``partition.*`` is unused.
    """
    data = load_image_data(dataset)
    if protocol is not None and protocol.partition is not None:
        return shared_client_data(data, num_clients, protocol, seed)
    x, y = data.pooled(include_test=bool(dataset.pool_test))
    labels = y.numpy()
    if partition.name == "fallah":
        split = partition_fallah(
            labels,
            data.num_classes,
            num_clients,
            int(partition.a),
            float(partition.test_ratio),
            seed,
        )
    elif partition.name == "dirichlet":
        split = partition_dirichlet(
            labels,
            data.num_classes,
            num_clients,
            int(partition.samples_per_client),
            float(partition.dirichlet_alpha),
            float(partition.test_fraction),
            seed,
        )
    else:
        raise PartitionError(
            f"unknown partition {partition.name!r}; choose one of {PARTITIONS}"
        )
    check_min_samples(split)
    return ClientData.from_split(data, x, y, split)


@lru_cache(maxsize=2)
def client_data(
    dataset: PerFedAvgDataset,
    partition: Partition,
    num_clients: int,
    seed: int,
    protocol: SharedPartition | None = None,
) -> ClientData:
    """:func:`build_client_data`, cached per process (one load per Ray worker).

    The settings groups are frozen dataclasses: equal settings hit the cache.
    """
    return build_client_data(dataset, partition, num_clients, seed, protocol)
