"""More partition primitives: label shards and a held-out validation split.

Like :mod:`pflcore.partition`, every function is a pure function of its
inputs and a seed.
"""

from __future__ import annotations

import numpy as np

from pflcore.partition import PartitionError


def shard_parts(
    labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int
) -> list[list[np.ndarray]]:
    """Pathological non-IID shards in the style of McMahan et al. and LG-FedAvg.

    The samples are sorted by label (ties broken at random), cut into
    ``num_clients * shards_per_client`` contiguous shards of near-equal size,
    and each client receives ``shards_per_client`` shards drawn at random
    without replacement. A client therefore sees at most
    ``shards_per_client`` classes (one more when a shard straddles a class
    boundary).

    Parameters
    ----------
    labels : numpy.ndarray
        Label of every pooled sample.
    num_clients : int
        Number of clients.
    shards_per_client : int
        Shards per client (LG-FedAvg's ``--shards_per_user``).
    seed : int
        Seed of the within-class order and of the shard draw.

    Returns
    -------
    list of list of numpy.ndarray
        ``parts[j]`` lists client ``j``'s shards (index arrays).

    Raises
    ------
    PartitionError
        If there are fewer samples than shards or a count is not positive.
    """
    if num_clients < 1 or shards_per_client < 1:
        raise PartitionError(
            f"need num_clients >= 1 and shards_per_client >= 1, got "
            f"{num_clients} and {shards_per_client}"
        )
    num_shards = num_clients * shards_per_client
    if num_shards > labels.size:
        raise PartitionError(
            f"{num_shards} shards ({num_clients} clients x {shards_per_client}) but "
            f"only {labels.size} samples"
        )
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(labels.size), labels))
    shards = np.array_split(order, num_shards)
    draw = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [[shards[s] for s in sorted(row.tolist())] for row in draw]


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
        shuffled = np.random.default_rng([seed, j]).permutation(np.asarray(idx))
        n_val = round(val_fraction * shuffled.size)
        if val_fraction > 0 and shuffled.size >= 2:
            n_val = min(max(n_val, 1), shuffled.size - 1)
        val.append(np.sort(shuffled[:n_val]))
        train.append(np.sort(shuffled[n_val:]))
    return train, val
