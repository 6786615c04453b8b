"""FedFomo's partitions: pathological label shards and latent distributions.

Both start from one pool of images (the training set, optionally with the
official test set) and give each client a disjoint share of it:

* ``pathological``: LG-FedAvg-style shards (``shards_per_client`` label-sorted
  shards per client; :func:`pflcore.splits.shard_parts`).
* ``latent``: the pool is clustered into ``num_distributions`` distributions
  and each distribution is split evenly among ``num_clients /
  num_distributions`` clients (:mod:`pflcore.latent`). The clustering
  features are ``pca`` (top principal components of standardised pixels: the
  offline stand-in for the paper's VGG embedding), ``embedding`` (a
  precomputed ``.npy``, e.g. the paper's VGG-11 + PCA-256 features) or
  ``labels`` (each class is a distribution: the class-label case, which needs
  ``num_distributions`` equal to the class count).

Each client's share is then split into test (``dataset.test_fraction``,
stratified by shard or by class) and training data, and the training data
once more, with a fixed seed, into train and validation
(``partition.val_fraction``; FedFomo's ``--train_split 0.8``). The
validation split is what FedFomo's weights are computed on; every method
trains on the train split only, so all methods see the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from pflcore.data import ImageData, load_dataset
from pflcore.latent import (
    distribution_parts,
    kmeans,
    load_embedding,
    pixel_pca_features,
)
from pflcore.partition import PartitionError, check_min_samples, split_train_test
from pflcore.splits import shard_parts, split_validation

PARTITION_KINDS = ("pathological", "latent")
LATENT_FEATURES = ("pca", "labels", "embedding")


@dataclass(frozen=True)
class FomoData:
    """The pooled samples and each client's train, validation and test indices.

    Attributes
    ----------
    data : ImageData
        The loaded dataset.
    x, y : torch.Tensor
        Pooled uint8 images and int64 labels the indices point into.
    train, val, test : list of numpy.ndarray
        Per-client disjoint, sorted index arrays.
    distribution : list of int, optional
        The latent distribution of each client (``None`` for shards).
    """

    data: ImageData
    x: torch.Tensor
    y: torch.Tensor
    train: list[np.ndarray]
    val: list[np.ndarray]
    test: list[np.ndarray]
    distribution: list[int] | None = None

    def _take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(idx)
        return self.x[index], self.y[index]

    def train_data(self, pid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client ``pid``'s training images and labels."""
        return self._take(self.train[pid])

    def val_data(self, pid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client ``pid``'s validation images and labels."""
        return self._take(self.val[pid])

    def test_data(self, pid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client ``pid``'s test images and labels."""
        return self._take(self.test[pid])

    def class_counts(self) -> np.ndarray:
        """Per-client (train, test) class counts ``(clients, 2, classes)``."""
        labels, c = self.y.numpy(), self.data.num_classes
        return np.stack(
            [
                np.stack(
                    [
                        np.bincount(labels[tr], minlength=c),
                        np.bincount(labels[te], minlength=c),
                    ]
                )
                for tr, te in zip(self.train, self.test, strict=True)
            ]
        )


def pool_subset(size: int, fraction: float, seed: int) -> np.ndarray | None:
    """Sorted, seeded subset of the pool to use (``None``: all of it).

    ``partition.pool_fraction < 1`` keeps that share of the pooled images
    (uniformly at random, before partitioning): a smaller, CPU-sized
    federation over the same images.
    """
    if not 0 < fraction <= 1:
        raise PartitionError(
            f"partition.pool_fraction must lie in (0, 1], got {fraction}"
        )
    if fraction == 1:
        return None
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(size, size=round(fraction * size), replace=False))


def latent_clusters(
    partition: dict[str, Any],
    x: torch.Tensor,
    y: np.ndarray,
    num_classes: int,
    seed: int,
    keep: np.ndarray | None = None,
    pool_size: int | None = None,
) -> np.ndarray:
    """The distribution id of every pooled sample (see the module docstring).

    ``keep`` names the rows of a precomputed embedding (which has one row
    per sample of the whole pool, ``pool_size`` rows) that ``x`` holds.
    """
    k = int(partition["num_distributions"])
    features = partition["features"]
    if features == "labels":
        if k != num_classes:
            raise PartitionError(
                f"partition.features=labels makes each class a distribution: "
                f"num_distributions must be {num_classes}, got {k}"
            )
        return y.astype(np.int64)
    if features == "embedding":
        if not partition.get("embedding_path"):
            raise PartitionError(
                "partition.features=embedding needs partition.embedding_path (.npy)"
            )
        total = int(x.shape[0]) if keep is None else pool_size
        emb = load_embedding(partition["embedding_path"], total)
        if keep is not None:
            emb = emb[keep]
    else:
        emb = pixel_pca_features(x, int(partition["pca_dim"]), seed)
    return kmeans(emb, k, seed)


def split_pool(
    parts: list[list[np.ndarray]],
    test_fraction: float,
    val_fraction: float,
    seed: int,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per-client parts to (train, val, test) index lists."""
    tt = split_train_test(parts, test_fraction, seed + 2)
    check_min_samples(tt, min_train=2, min_test=1)
    train, val = split_validation(tt.train, val_fraction, seed + 3)
    for j, v in enumerate(val):
        if val_fraction > 0 and v.size == 0:
            raise PartitionError(f"client {j} gets no validation sample")
    return train, val, tt.test


def build_fomo_data(
    dataset: dict[str, Any], partition: dict[str, Any], num_clients: int, seed: int
) -> FomoData:
    """Load the configured dataset and partition it for FedFomo.

    Parameters
    ----------
    dataset : dict
        The ``dataset`` config group (``name``, ``root``, ``source``, ``path``,
        ``download``, ``pool_test``, ``test_fraction``).
    partition : dict
        The ``partition`` config group (``kind``, ``shards_per_client``,
        ``num_distributions``, ``features``, ``embedding_path``, ``pca_dim``,
        ``val_fraction``).
    num_clients : int
        Number of clients.
    seed : int
        Partition seed.
    """
    data = load_dataset(
        dataset["name"],
        dataset["root"],
        dataset["source"],
        dataset["path"],
        dataset["download"],
    )
    x, y_t = data.pooled(include_test=bool(dataset["pool_test"]))
    pool_size = int(x.shape[0])
    keep = pool_subset(pool_size, float(partition.get("pool_fraction", 1.0)), seed)
    if keep is not None:
        x, y_t = x[torch.from_numpy(keep)], y_t[torch.from_numpy(keep)]
    y = y_t.numpy()
    if num_clients > x.shape[0]:
        raise PartitionError(f"{num_clients} clients but only {x.shape[0]} samples")
    distribution = None
    if partition["kind"] == "pathological":
        parts = shard_parts(y, num_clients, int(partition["shards_per_client"]), seed)
    elif partition["kind"] == "latent":
        clusters = latent_clusters(
            partition, x, y, data.num_classes, seed, keep, pool_size
        )
        parts = distribution_parts(
            clusters, int(partition["num_distributions"]), num_clients, y, seed + 1
        )
        per = num_clients // int(partition["num_distributions"])
        distribution = [j // per for j in range(num_clients)]
    else:
        raise PartitionError(
            f"partition.kind={partition['kind']!r} is not one of {PARTITION_KINDS}"
        )
    train, val, test = split_pool(
        parts,
        float(dataset["test_fraction"]),
        float(partition["val_fraction"]),
        seed,
    )
    return FomoData(data, x, y_t, train, val, test, distribution)


@lru_cache(maxsize=2)
def _cached(key: str, num_clients: int, seed: int) -> FomoData:
    settings = json.loads(key)
    return build_fomo_data(
        settings["dataset"], settings["partition"], num_clients, seed
    )


def fomo_data(
    dataset: dict[str, Any], partition: dict[str, Any], num_clients: int, seed: int
) -> FomoData:
    """``build_fomo_data``, cached per process (one load per Ray worker)."""
    key = json.dumps({"dataset": dataset, "partition": partition}, sort_keys=True)
    return _cached(key, num_clients, seed)
