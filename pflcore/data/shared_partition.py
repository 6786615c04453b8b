"""The shared protocol's partition: one split of the training set for every package.

With ``protocol.partition`` set (:class:`~pflcore.config.shared.SharedPartition`),
a package takes its clients from :func:`shared_client_data` instead of its own
partition, so every method of a comparison trains, selects and tests on the
same images: each client draws ``samples_per_client`` images of the dataset's
training set only (:mod:`pflcore.data.label_skew`) and every class part is cut
into train, validation and test. The draws are streams of the run seed under
the tag :data:`PARTITION_TAG`; :func:`partition_digest` names the result.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from pflcore.config.seeds import derive_seed, stream_rng
from pflcore.data.client_data import ClientData
from pflcore.data.images import ImageData
from pflcore.data.label_skew import (
    SPLITS,
    ClassPools,
    class_parts,
    dirichlet_parts,
    split_three_ways,
)
from pflcore.data.partition import PartitionError

if TYPE_CHECKING:
    from pflcore.config.shared import SharedPartition

PARTITION_TAG = 0x5EED  # the shared partition's streams: [seed, tag, 1..4]


def shared_indices(
    labels: np.ndarray,
    num_classes: int,
    num_clients: int,
    protocol: SharedPartition,
    seed: int,
) -> dict[str, list[np.ndarray]]:
    """Each client's train, validation and test indices into ``labels``.

    Raises
    ------
    PartitionError
        If the settings cannot be met by the data.
    """
    if protocol.partition == "classes":
        parts = class_parts(
            labels,
            num_classes,
            num_clients,
            protocol.samples_per_client,
            protocol.classes_per_client,
            derive_seed(seed, PARTITION_TAG, 1),
        )
    elif protocol.partition == "dirichlet":
        parts = dirichlet_parts(
            labels,
            num_classes,
            num_clients,
            protocol.samples_per_client,
            protocol.alpha,
            stream_rng(seed, PARTITION_TAG, 2),
            ClassPools(labels, num_classes, stream_rng(seed, PARTITION_TAG, 3)),
        )
    else:
        raise PartitionError(
            f"protocol.partition must be classes or dirichlet, got "
            f"{protocol.partition!r}"
        )
    return split_three_ways(
        parts,
        protocol.val_fraction,
        protocol.test_fraction,
        derive_seed(seed, PARTITION_TAG, 4),
    )


def shared_client_data(
    data: ImageData, num_clients: int, protocol: SharedPartition, seed: int
) -> ClientData:
    """Every client's splits of ``data``'s training set under the shared protocol.

    The official test split, if loaded, is not used: each client's test
    images come from its own share, as its training images.

    Raises
    ------
    PartitionError
        If the settings cannot be met by the data.
    """
    x, y = data.x_train, data.y_train
    indices = shared_indices(y.numpy(), data.num_classes, num_clients, protocol, seed)
    return ClientData(data, ClientData.shared_pool(x, y, indices), indices)


def partition_digest(data: ClientData) -> str:
    """sha256 over every client's indices, split by split: names the partition."""
    digest = hashlib.sha256()
    for name in SPLITS:
        for j, idx in enumerate(data.indices[name]):
            digest.update(f"{name}:{j}:".encode())
            digest.update(np.ascontiguousarray(idx, dtype=np.int64).tobytes())
    return digest.hexdigest()
