"""FedPer's CIFAR partition: at most k classes per client, classes split equally.

Each client draws k classes; every class's samples are cut into equal parts
among the clients holding it; each client's share of each class is split into
its train and test parts, so a client's test split has exactly its classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from pflcore.data import ImageData, load_dataset
from pflcore.partition import (
    ClientSplit,
    PartitionError,
    assign_class_sets,
    check_min_samples,
    split_classes_among_holders,
    split_train_test,
)


@dataclass(frozen=True)
class FederatedData:
    """The pooled samples and every client's share of them."""

    data: ImageData
    x: torch.Tensor
    y: torch.Tensor
    split: ClientSplit

    def client(
        self, pid: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Client ``pid``'s (x_train, y_train, x_test, y_test)."""
        tr, te = (
            torch.from_numpy(self.split.train[pid]),
            torch.from_numpy(self.split.test[pid]),
        )
        return self.x[tr], self.y[tr], self.x[te], self.y[te]

    def class_counts(self) -> np.ndarray:
        """Per-client (train, test) class counts."""
        return self.split.class_counts(self.y.numpy(), self.data.num_classes)


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
    parts = split_classes_among_holders(labels, class_sets, seed + 1)
    split = split_train_test(parts, test_fraction, seed + 2)
    check_min_samples(split)
    return split


def build_federated_data(
    dataset: dict[str, Any], num_clients: int, seed: int
) -> FederatedData:
    """Load the configured dataset and partition it.

    Parameters
    ----------
    dataset : dict
        The ``dataset`` config group (``name``, ``root``, ``source``, ``path``,
        ``download``, ``pool_test``, ``test_fraction``, ``classes_per_client``,
        ``class_assignment``).
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
    x, y = data.pooled(include_test=bool(dataset["pool_test"]))
    if num_clients > x.shape[0]:
        raise PartitionError(f"{num_clients} clients but only {x.shape[0]} samples")
    split = partition_k_classes(
        y.numpy(),
        data.num_classes,
        num_clients,
        int(dataset["classes_per_client"]),
        float(dataset["test_fraction"]),
        seed,
        dataset["class_assignment"],
    )
    return FederatedData(data, x, y, split)


@lru_cache(maxsize=2)
def _cached(
    key: tuple[tuple[str, Any], ...], num_clients: int, seed: int
) -> FederatedData:
    return build_federated_data(dict(key), num_clients, seed)


def federated_data(
    dataset: dict[str, Any], num_clients: int, seed: int
) -> FederatedData:
    """``build_federated_data``, cached per process (one load per Ray worker)."""
    return _cached(tuple(sorted(dataset.items())), num_clients, seed)
