"""Deterministic partition primitives.

Every function is a pure function of its inputs and a seed: each process that
calls it with the same arguments derives the same client data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


class PartitionError(ValueError):
    """A partition setting that cannot be satisfied."""


@dataclass(frozen=True)
class ClientSplit:
    """Indices of each client's train and test samples into one pooled array.

    Attributes
    ----------
    train : list of numpy.ndarray
        ``train[j]`` indexes client ``j``'s training samples.
    test : list of numpy.ndarray
        ``test[j]`` indexes client ``j``'s test samples.
    """

    train: list[np.ndarray]
    test: list[np.ndarray]

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.train)

    def class_counts(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """Per-client class counts, shape ``(num_clients, 2, num_classes)``.

        The middle axis is (train, test).
        """
        counts = np.zeros((self.num_clients, 2, num_classes), dtype=np.int64)
        for j in range(self.num_clients):
            counts[j, 0] = np.bincount(labels[self.train[j]], minlength=num_classes)
            counts[j, 1] = np.bincount(labels[self.test[j]], minlength=num_classes)
        return counts


def assign_class_sets(
    num_clients: int,
    num_classes: int,
    classes_per_client: int,
    seed: int,
    mode: str = "random",
) -> list[np.ndarray]:
    """Give each client a set of distinct classes.

    Parameters
    ----------
    num_clients : int
        Number of clients.
    num_classes : int
        Number of classes in the dataset.
    classes_per_client : int
        k, the number of distinct classes per client.
    seed : int
        Seed of the draw (``random`` mode).
    mode : str
        ``random``: k classes drawn uniformly without replacement per client.
        ``balanced``: client j gets ``{(j * s + r) mod C : r < k}`` with
        stride ``s = max(C // N, 1)``.

    Returns
    -------
    list of numpy.ndarray
        Sorted class ids per client.
    """
    if not 1 <= classes_per_client <= num_classes:
        raise PartitionError(
            f"classes per client k={classes_per_client} must lie in 1..{num_classes} "
            f"(the dataset has {num_classes} classes)"
        )
    if num_clients < 1:
        raise PartitionError(f"need at least one client, got {num_clients}")
    if mode == "random":
        rng = np.random.default_rng(seed)
        return [
            np.sort(rng.choice(num_classes, size=classes_per_client, replace=False))
            for _ in range(num_clients)
        ]
    if mode == "balanced":
        stride = max(num_classes // num_clients, 1)
        return [
            np.sort((j * stride + np.arange(classes_per_client)) % num_classes)
            for j in range(num_clients)
        ]
    raise PartitionError(f"unknown class assignment mode {mode!r}")


def split_classes_among_holders(
    labels: np.ndarray, class_sets: list[np.ndarray], seed: int
) -> list[list[np.ndarray]]:
    """Cut each class's samples into near-equal parts, one per client holding it.

    Parameters
    ----------
    labels : numpy.ndarray
        Label of every pooled sample.
    class_sets : list of numpy.ndarray
        Classes each client may draw.
    seed : int
        Seed of the shuffles.

    Returns
    -------
    list of list of numpy.ndarray
        ``parts[j]`` lists client ``j``'s index arrays, one per held class.
    """
    rng = np.random.default_rng(seed)
    num_classes = int(labels.max()) + 1 if labels.size else 0
    holders: dict[int, list[int]] = {c: [] for c in range(num_classes)}
    for client, classes in enumerate(class_sets):
        for c in classes:
            holders.setdefault(int(c), []).append(client)
    parts: list[list[np.ndarray]] = [[] for _ in class_sets]
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if not holders[c]:
            log.info(
                "class %d has no holder; its %d samples stay unused", c, members.size
            )
            continue
        rng.shuffle(members)
        for client, chunk in zip(
            holders[c], np.array_split(members, len(holders[c])), strict=True
        ):
            parts[client].append(chunk)
    return parts


def split_train_test(
    parts: list[list[np.ndarray]], test_fraction: float, seed: int
) -> ClientSplit:
    """Split each client's data into train and test, stratified by class part.

    Parameters
    ----------
    parts : list of list of numpy.ndarray
        Per-client index arrays (e.g. one per class).
    test_fraction : float
        Share of each part that goes to the client's test split, in (0, 1).
    seed : int
        Seed of the shuffles.

    Returns
    -------
    ClientSplit
        Train and test indices per client.
    """
    if not 0.0 < test_fraction < 1.0:
        raise PartitionError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for client_parts in parts:
        tr, te = [], []
        for part in client_parts:
            shuffled = rng.permutation(part)
            n_test = round(test_fraction * shuffled.size)
            te.append(shuffled[:n_test])
            tr.append(shuffled[n_test:])
        train.append(np.sort(np.concatenate(tr)) if tr else np.zeros(0, np.int64))
        test.append(np.sort(np.concatenate(te)) if te else np.zeros(0, np.int64))
    return ClientSplit(train=train, test=test)


def check_min_samples(
    split: ClientSplit, min_train: int = 2, min_test: int = 1
) -> None:
    """Raise if any client is left with too few samples.

    Two training samples is the least a BatchNorm network can train on.

    Raises
    ------
    PartitionError
        Naming the first client that falls short.
    """
    for j in range(split.num_clients):
        if split.train[j].size < min_train or split.test[j].size < min_test:
            raise PartitionError(
                f"client {j} gets {split.train[j].size} train and {split.test[j].size} "
                f"test samples (need at least {min_train} and {min_test}): too many "
                "clients for this dataset and partition"
            )


def select_users(
    users: np.ndarray,
    num_users: int,
    seed: int,
    *,
    more_than: int = 0,
    fewer_than: int | None = None,
    labels: np.ndarray | None = None,
    min_per_label: int = 0,
    num_labels: int | None = None,
) -> np.ndarray:
    """Draw ``num_users`` users among those whose sample count fits a range.

    Parameters
    ----------
    users : numpy.ndarray
        The user of every sample.
    num_users : int
        How many users to draw (without replacement, uniformly).
    seed : int
        Seed of the draw.
    more_than : int
        Keep users with strictly more samples than this.
    fewer_than : int, optional
        Keep users with strictly fewer samples than this (no upper bound if
        ``None``).
    labels : numpy.ndarray, optional
        Label of every sample, for ``min_per_label``.
    min_per_label : int
        Keep only users with at least this many samples of each of the
        ``num_labels`` labels ``0..num_labels-1`` (0 disables the rule).
    num_labels : int, optional
        Number of labels (default: ``labels.max() + 1``).

    Returns
    -------
    numpy.ndarray
        The drawn users, sorted.

    Raises
    ------
    PartitionError
        If fewer users qualify than ``num_users``.
    """
    if num_users < 1:
        raise PartitionError(f"need at least one user, got {num_users}")
    candidates, counts = np.unique(users, return_counts=True)
    keep = counts > more_than
    if fewer_than is not None:
        keep &= counts < fewer_than
    if min_per_label > 0:
        if labels is None:
            raise ValueError("min_per_label needs the labels")
        width = int(labels.max()) + 1 if num_labels is None else num_labels
        inverse = np.searchsorted(candidates, users)
        per_label = np.zeros((candidates.size, width), dtype=np.int64)
        np.add.at(per_label, (inverse, labels), 1)
        keep &= (per_label >= min_per_label).all(axis=1)
    eligible = candidates[keep]
    if eligible.size < num_users:
        bounds = f"more than {more_than}" + (
            f" and fewer than {fewer_than}" if fewer_than is not None else ""
        )
        extra = f", at least {min_per_label} of each label" if min_per_label > 0 else ""
        raise PartitionError(
            f"{num_users} clients requested but only {eligible.size} of "
            f"{candidates.size} users have {bounds} samples{extra}"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=num_users, replace=False))


def rows_of_users(users: np.ndarray, chosen: np.ndarray) -> list[np.ndarray]:
    """Indices of each chosen user's samples, in sample order.

    Parameters
    ----------
    users : numpy.ndarray
        The user of every sample.
    chosen : numpy.ndarray
        The users wanted.

    Returns
    -------
    list of numpy.ndarray
        ``rows[j]`` indexes ``chosen[j]``'s samples.
    """
    return [np.flatnonzero(users == user) for user in chosen]


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded subset keeping ``fraction`` of every class (for quick runs).

    Parameters
    ----------
    labels : numpy.ndarray
        Label of every sample.
    fraction : float
        Share of each class kept, in (0, 1]; each class keeps at least one
        sample.
    seed : int
        Seed of the draw.

    Returns
    -------
    numpy.ndarray
        Sorted indices of the kept samples (all indices when ``fraction`` is 1).
    """
    if not 0.0 < fraction <= 1.0:
        raise PartitionError(f"subset fraction must lie in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(labels.shape[0])
    rng = np.random.default_rng(seed)
    kept = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, round(fraction * members.size))
        kept.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(kept))
