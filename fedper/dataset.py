"""FedPer's partitions: CIFAR's k classes per client, and FLICKR-AES's raters.

CIFAR: each client draws k classes; every class's samples are cut into equal
parts among the clients holding it; each client's share of each class is split
into its train and test parts, so a client's test split has exactly its classes.

FLICKR-AES: one client per rater (worker). Among the workers with more than
``min_ratings`` and fewer than ``max_ratings`` rated images, ``num_clients`` are
drawn with the run's seed; each worker's ratings are split once, with the seed,
into train and test (80/20); the label is the worker's own score minus one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

import numpy as np
import torch

from fedper.flickr import decode_images, find_files, read_flickr_ratings
from fedper.settings import FedPerDataset
from pflcore.config.shared import SharedPartition
from pflcore.data.client_data import ClientData
from pflcore.data.images import ImageData, load_dataset
from pflcore.data.partition import (
    ClientSplit,
    PartitionError,
    assign_class_sets,
    check_min_samples,
    rows_of_users,
    select_users,
    split_classes_among_holders,
    split_train_test,
    stratified_subset,
)
from pflcore.data.shared_partition import shared_client_data

FLICKR_CLASSES = 5  # scores 1..5

# Seed streams of the partition, as offsets from the run seed (fixed: they
# define the partitions): the class holders' shares, the train/test split,
# the stratified subset.
HOLDERS_STREAM, SPLIT_STREAM, SUBSET_STREAM = 1, 2, 3


@dataclass(frozen=True)
class FederatedData(ClientData):
    """The pooled samples and every client's share of them (see ``ClientData``).

    Attributes
    ----------
    client_names : tuple of str, optional
        Who partition-id ``j`` is, for sources with users (FLICKR-AES's
        worker ids); ``None`` otherwise.
    """

    client_names: tuple[str, ...] | None = None


def partition_k_classes(
    labels: np.ndarray,
    num_classes: int,
    num_clients: int,
    classes_per_client: int,
    test_fraction: float,
    seed: int,
    class_assignment: str = "random",
) -> ClientSplit:
    """FedPer's partition of pooled labels (see the module docstring).

    Raises
    ------
    PartitionError
        If k exceeds the class count or a client ends up with no train or
        test sample.
    """
    class_sets = assign_class_sets(
        num_clients, num_classes, classes_per_client, seed, class_assignment
    )
    parts = split_classes_among_holders(labels, class_sets, seed + HOLDERS_STREAM)
    split = split_train_test(parts, test_fraction, seed + SPLIT_STREAM)
    check_min_samples(split)
    return split


def partition_raters(
    workers: np.ndarray,
    scores: np.ndarray,
    num_clients: int,
    seed: int,
    *,
    min_ratings: int,
    max_ratings: int,
    test_fraction: float,
    min_per_score: int = 0,
) -> tuple[np.ndarray, list[np.ndarray], ClientSplit]:
    """FedPer's FLICKR-AES clients: seeded raters, each split once into train/test.

    Parameters
    ----------
    workers : numpy.ndarray
        Worker id of every rating.
    scores : numpy.ndarray
        Score (1..5) of every rating.
    num_clients : int
        Number of workers to draw (the paper's N = 30).
    seed : int
        Seed of the draw (``seed``) and of the splits (``seed + SPLIT_STREAM``).
    min_ratings, max_ratings : int
        Draw among workers with more than ``min_ratings`` and fewer than
        ``max_ratings`` ratings (the paper's 60 and 290).
    test_fraction : float
        Share of each worker's ratings held out as its test split.
    min_per_score : int
        Also require this many ratings of every score (the Flower baseline
        uses 4; 0 disables the rule, as the paper states none).

    Returns
    -------
    chosen : numpy.ndarray
        The drawn worker ids, sorted: partition-id ``j`` is ``chosen[j]``.
    rows : list of numpy.ndarray
        ``rows[j]`` indexes worker ``chosen[j]``'s ratings in the input.
    split : ClientSplit
        Train and test indices into the concatenation of ``rows``.

    Raises
    ------
    PartitionError
        If too few workers qualify or a worker ends up with no test rating.
    """
    chosen = select_users(
        workers,
        num_clients,
        seed,
        more_than=min_ratings,
        fewer_than=max_ratings,
        labels=scores - 1,
        min_per_label=min_per_score,
        num_labels=FLICKR_CLASSES,
    )
    rows = rows_of_users(workers, chosen)
    starts = np.cumsum([0, *(r.size for r in rows)])
    parts = [[np.arange(starts[j], starts[j + 1])] for j in range(len(rows))]
    split = split_train_test(parts, test_fraction, seed + SPLIT_STREAM)
    check_min_samples(split)
    return chosen, rows, split


def build_flickr_data(
    dataset: FedPerDataset, num_clients: int, seed: int
) -> FederatedData:
    """FLICKR-AES in its published layout, partitioned by rater.

    Only the drawn workers' images are decoded (once each, even when several
    drawn workers rated the same image), resized to ``dataset.image_size``.
    The samples are the drawn workers' ratings, worker by worker; the label
    is the worker's score minus one. Normalisation constants (computed by the
    client from ``data``) are over these images, labels playing no part.

    Parameters
    ----------
    dataset : FedPerDataset
        The ``dataset`` settings for FLICKR (``root``, ``folder``,
        ``image_folder``, ``labels_file``, ``min_ratings``, ``max_ratings``,
        ``min_per_score``, ``test_fraction``, ``image_size``).
    num_clients : int
        Number of workers drawn.
    seed : int
        Partition seed.
    """
    folder = Path(dataset.root).expanduser() / dataset.folder
    ratings = read_flickr_ratings(str(folder), dataset.labels_file)
    chosen, rows, split = partition_raters(
        ratings.users,
        ratings.scores,
        num_clients,
        seed,
        min_ratings=int(dataset.min_ratings),
        max_ratings=int(dataset.max_ratings),
        test_fraction=float(dataset.test_fraction),
        min_per_score=int(dataset.min_per_score),
    )
    order = np.concatenate(rows)
    names, image_of = np.unique(ratings.items[order], return_inverse=True)
    paths = find_files(folder, names.tolist(), dataset.image_folder)
    images = decode_images(paths, int(dataset.image_size))
    x = images[torch.from_numpy(image_of.reshape(-1))]
    y = torch.from_numpy(ratings.scores[order] - 1)
    data = ImageData("flickr", x, y, None, None, FLICKR_CLASSES)
    return FederatedData.from_split(
        data, x, y, split, client_names=tuple(str(w) for w in chosen)
    )


def build_federated_data(
    dataset: FedPerDataset,
    num_clients: int,
    seed: int,
    protocol: SharedPartition | None = None,
) -> FederatedData:
    """Load the configured dataset and partition it.

    Parameters
    ----------
    dataset : FedPerDataset
        The ``dataset`` settings: for ``name=flickr`` see
        :func:`build_flickr_data`; otherwise ``name``, ``root``, ``source``,
        ``path``, ``download``, ``pool_test``, ``test_fraction``,
        ``classes_per_client``, ``class_assignment`` and ``subset_fraction``
        (keep that share of every class, seeded, before partitioning; quick
        runs; default 1).
    num_clients : int
        Number of clients.
    seed : int
        Partition seed.
    protocol : pflcore.config.shared.SharedPartition, optional
        The ``protocol.*`` settings: with ``protocol.partition`` set, the
        shared protocol's clients (training set only) replace the package's
        partition, whose ``dataset.*`` keys are then unused.
    """
    shared = protocol is not None and protocol.partition is not None
    if dataset.name == "flickr":
        if shared:
            raise PartitionError("protocol.partition takes a labelled image dataset")
        return build_flickr_data(dataset, num_clients, seed)
    data = load_dataset(
        dataset.name,
        dataset.root,
        dataset.source,
        dataset.path,
        dataset.download,
    )
    if shared:
        assert protocol is not None
        own = shared_client_data(data, num_clients, protocol, seed)
        return FederatedData(own.data, own.pools, own.indices)
    x, y = data.pooled(include_test=bool(dataset.pool_test))
    fraction = float(dataset.subset_fraction)
    if fraction < 1.0:
        keep = torch.from_numpy(
            stratified_subset(y.numpy(), fraction, seed + SUBSET_STREAM)
        )
        x, y = x[keep], y[keep]
    if num_clients > x.shape[0]:
        raise PartitionError(f"{num_clients} clients but only {x.shape[0]} samples")
    split = partition_k_classes(
        y.numpy(),
        data.num_classes,
        num_clients,
        int(dataset.classes_per_client),
        float(dataset.test_fraction),
        seed,
        # null is refused by name where the mode is read
        cast(str, dataset.class_assignment),
    )
    return FederatedData.from_split(data, x, y, split)


@lru_cache(maxsize=2)
def federated_data(
    dataset: FedPerDataset,
    num_clients: int,
    seed: int,
    protocol: SharedPartition | None = None,
) -> FederatedData:
    """``build_federated_data``, cached per process (one load per Ray worker).

    The settings are frozen (hashable), so they are the cache key.
    """
    return build_federated_data(dataset, num_clients, seed, protocol)
