"""More partition primitives: label shards and a held-out validation split.

Like :mod:`pflcore.data.partition`, every function is a pure function of its
inputs and a seed.
"""

from __future__ import annotations

import numpy as np

from pflcore.config.seeds import stream_rng
from pflcore.data.partition import PartitionError

# Tags of the shard streams under a partition seed (fixed: they define the
# clients); split_validation keys client j's shuffle by j.
SHARD_CLASSES_TAG, SHARD_CUT_TAG = 0, 1


def shard_classes(
    num_clients: int, shards_per_client: int, num_classes: int, seed: int
) -> np.ndarray:
    """The class of every client's shards, as LG-FedAvg's ``rand_set_all``.

    The ``num_clients * shards_per_client`` shards are shared among the
    classes as evenly as possible (LG-FedAvg's ``shard_per_class``; when it
    is not a whole number, a seeded choice of classes gets one shard more),
    the list of shard labels is shuffled and cut into one row per client.
    A client can draw the same class twice.

    Parameters
    ----------
    num_clients, shards_per_client : int
        Clients and shards per client (``--shards_per_user``).
    num_classes : int
        Number of classes; every class gets at least one shard.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    numpy.ndarray
        ``int64`` array ``(num_clients, shards_per_client)`` of class ids.

    Raises
    ------
    PartitionError
        If a count is not positive or there are fewer shards than classes.
    """
    if num_clients < 1 or shards_per_client < 1:
        raise PartitionError(
            f"need num_clients >= 1 and shards_per_client >= 1, got "
            f"{num_clients} and {shards_per_client}"
        )
    total = num_clients * shards_per_client
    if total < num_classes:
        raise PartitionError(
            f"{total} shards ({num_clients} clients x {shards_per_client}) cannot "
            f"cover {num_classes} classes; raise partition.shards_per_client"
        )
    rng = stream_rng(seed, SHARD_CLASSES_TAG)
    per_class, extra = divmod(total, num_classes)
    counts = np.full(num_classes, per_class, dtype=np.int64)
    counts[rng.permutation(num_classes)[:extra]] += 1
    labels = rng.permutation(np.repeat(np.arange(num_classes), counts))
    return labels.reshape(num_clients, shards_per_client)


def cut_shards(
    labels: np.ndarray, assignment: np.ndarray, seed: int
) -> list[list[np.ndarray]]:
    """Cut each class into the shards ``assignment`` asks of it, within the class.

    Each class's samples are shuffled and cut into as many near-equal shards
    as there are slots of that class in ``assignment`` (LG-FedAvg's
    ``client_noniid``, whose leftover samples go one per shard); the shards
    are dealt to the slots. Applying the same ``assignment`` to a test pool
    gives each client test classes matching its training classes.

    Parameters
    ----------
    labels : numpy.ndarray
        Label of every pooled sample.
    assignment : numpy.ndarray
        ``(num_clients, shards_per_client)`` class ids (:func:`shard_classes`).
    seed : int
        Seed of the within-class shuffles.

    Returns
    -------
    list of list of numpy.ndarray
        ``parts[j][s]``: the sorted indices of client ``j``'s ``s``-th shard.
        The shards are disjoint and, when every class has a slot, cover the
        pool.

    Raises
    ------
    PartitionError
        If a class has fewer samples than shards.
    """
    rng = stream_rng(seed, SHARD_CUT_TAG)
    num_clients, per_client = assignment.shape
    parts: list[list[np.ndarray]] = [
        [np.zeros(0, np.int64)] * per_client for _ in range(num_clients)
    ]
    for c in np.unique(assignment):
        slots = np.argwhere(assignment == c)  # (client, slot) pairs, row-major
        members = rng.permutation(np.flatnonzero(labels == c))
        if members.size < len(slots):
            raise PartitionError(
                f"class {int(c)} has {members.size} samples for {len(slots)} "
                "shards; lower partition.shards_per_client or num_clients"
            )
        for (client, slot), piece in zip(
            slots, np.array_split(members, len(slots)), strict=True
        ):
            parts[int(client)][int(slot)] = np.sort(piece)
    return parts


def shard_parts(
    labels: np.ndarray,
    num_clients: int,
    shards_per_client: int,
    seed: int,
    num_classes: int | None = None,
) -> list[list[np.ndarray]]:
    """Pathological non-IID shards cut within classes, as LG-FedAvg and FedFomo.

    :func:`shard_classes` then :func:`cut_shards`: every client holds at most
    ``shards_per_client`` classes, whatever the pool size.

    Parameters
    ----------
    labels : numpy.ndarray
        Label of every pooled sample.
    num_clients, shards_per_client : int
        Clients and shards per client.
    seed : int
        Seed of the class draw and the within-class shuffles.
    num_classes : int, optional
        Class count (default: the largest label + 1).

    Returns
    -------
    list of list of numpy.ndarray
        ``parts[j]`` lists client ``j``'s shards (index arrays).
    """
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    assignment = shard_classes(num_clients, shards_per_client, classes, seed)
    return cut_shards(labels, assignment, seed)


def split_validation(
    indices: list[np.ndarray], val_fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hold out a fixed, seeded share of each client's training indices.

    Parameters
    ----------
    indices : list of numpy.ndarray
        Each client's training indices.
    val_fraction : float
        Share held out for validation, in [0, 1). FedFomo uses 0.2
        (``--train_split 0.8``). A client with at least two samples keeps at
        least one on each side when the fraction is positive.
    seed : int
        Seed of the shuffles (client ``j`` uses the stream ``(seed, j)``, so a
        client's split does not depend on the other clients).

    Returns
    -------
    train, val : list of numpy.ndarray
        Sorted, disjoint index arrays whose union is each client's input.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise PartitionError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for j, idx in enumerate(indices):
        shuffled = stream_rng(seed, j).permutation(np.asarray(idx))
        n_val = round(val_fraction * shuffled.size)
        if val_fraction > 0 and shuffled.size >= 2:
            n_val = min(max(n_val, 1), shuffled.size - 1)
        val.append(np.sort(shuffled[:n_val]))
        train.append(np.sort(shuffled[n_val:]))
    return train, val
