"""A SuperNode's own data: its partition file and the population's constants.

A SuperNode started with ``--node-config "partition-id=J data-path=FILE"``
reads only ``FILE`` (written by :mod:`pflcore.data.partition_files`). What its
ClientApp needs from the whole population, the class count and the
per-channel normalisation constants, is not in the file: the launcher puts
it in the run config (:data:`POPULATION_KEY`), computed on the server side
exactly as the embedded simulation computes it, so both train on identically
scaled batches.

The node's :class:`~pflcore.data.client_data.ClientData` holds its own splits at
partition-id ``J`` and nothing at every other id, so a package's runtime
serves it unchanged; a message for another partition finds no samples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from pflcore.data.client_data import ClientData
from pflcore.data.images import DataFormatError, ImageData
from pflcore.data.partition_files import read_partition

POPULATION_KEY = "pfl.population"  # run config: JSON of population_of(...)
DATA_PATH = "data-path"  # node config: the node's partition file
NODE_DATA = "node_data"  # config key RunConfigClientApp adds for such a node


def population_of(data: ClientData) -> dict[str, Any]:
    """What every client needs from the population: classes and channel constants."""
    mean, std = data.data.channel_stats()
    return {
        "dataset": data.data.name,
        "num_classes": int(data.data.num_classes),
        "mean": list(mean),
        "std": list(std),
    }


@dataclass(frozen=True)
class NodeImageData(ImageData):
    """A node's own training images, with the population's channel constants."""

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The population's per-channel mean and std (not this node's own)."""
        return self.mean, self.std


@lru_cache(maxsize=2)
def _node_data(path: str, population_json: str) -> ClientData:
    population = json.loads(population_json)
    file = read_partition(path)
    if file.meta["dataset"] != population["dataset"]:
        raise DataFormatError(
            f"{path} holds {file.meta['dataset']!r} data but the run trains on "
            f"{population['dataset']!r}"
        )
    pid, count = file.partition_id, int(file.meta["num_partitions"])
    x_train, y_train = file.splits["train"]
    data = NodeImageData(
        str(file.meta["dataset"]),
        x_train,
        y_train,
        None,
        None,
        int(population["num_classes"]),
        mean=tuple(float(v) for v in population["mean"]),
        std=tuple(float(v) for v in population["std"]),
    )
    nothing = np.zeros(0, dtype=np.int64)
    indices = {
        split: [
            np.arange(int(y.shape[0]), dtype=np.int64) if j == pid else nothing
            for j in range(count)
        ]
        for split, (_, y) in file.splits.items()
    }
    return ClientData(data, dict(file.splits), indices)


def node_data(config: dict[str, Any]) -> ClientData | None:
    """The node's own data when ``config`` names a partition file, else None.

    Raises
    ------
    DatasetNotFoundError, DataFormatError
        If the file is missing, foreign or broken, or holds another dataset.
    """
    node = config.get(NODE_DATA)
    if not node:
        return None
    return _node_data(str(node["path"]), json.dumps(node["population"]))


def with_node_data(
    config: dict[str, Any], node_config: dict[str, Any], run_config: dict[str, Any]
) -> dict[str, Any]:
    """``config`` for a node whose node config names its partition file.

    Raises
    ------
    DataFormatError
        If the node has a file but the run config carries no population.
    """
    path = node_config.get(DATA_PATH)
    if not path:
        return config
    population = str(run_config.get(POPULATION_KEY, "") or "")
    if not population:
        raise DataFormatError(
            f"node config {DATA_PATH}={path} but the run config has no "
            f"{POPULATION_KEY} (submit with python -m <package>.main launcher=flwr)"
        )
    node = {"path": str(path), "population": json.loads(population)}
    return {**config, NODE_DATA: node}


def without_node_data(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` less the node's partition-file entry: the settings alone.

    :func:`with_node_data` adds that entry beside the settings; a package
    parses its typed settings from what this returns and reads the node's
    data with :func:`node_data` from the full ``config``.
    """
    return {k: v for k, v in config.items() if k != NODE_DATA}
