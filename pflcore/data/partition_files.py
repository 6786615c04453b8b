"""One client's data in its own file, for a node that holds only its own data.

:func:`export_partitions` (the command ``python -m pflcore.run.partition_export``)
writes ``DIR/partition-<id>.npz`` for every client:
its ``x_<split>`` (uint8 ``(n, C, H, W)``) and ``y_<split>`` (int64) arrays for
each split the package makes, and a ``meta`` JSON entry (format, partition-id,
number of partitions, dataset, classes, channels, image size, the split sizes
and class counts, the command's overrides). ``DIR/partitions.json`` lists the
files. A deployed client reads only its own file (:func:`read_partition`).

What clients need from the whole population (normalisation constants, the
class count) is not taken from a node's file: it belongs to the server side.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pflcore.data.client_data import ClientData
from pflcore.data.images import DataFormatError, DatasetNotFoundError

FORMAT = "pfl-suite partition 1"


@dataclass(frozen=True)
class PartitionFile:
    """One client's splits and the file's metadata."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    meta: dict[str, Any]

    @property
    def partition_id(self) -> int:
        """The client this file belongs to."""
        return int(self.meta["partition_id"])


def partition_meta(data: ClientData, pid: int) -> dict[str, Any]:
    """What a file records about client ``pid`` besides its arrays."""
    splits = list(data.indices)
    labels = {s: data.split_of(pid, s)[1].numpy() for s in splits}
    return {
        "format": FORMAT,
        "partition_id": pid,
        "num_partitions": data.num_clients,
        "dataset": data.data.name,
        "num_classes": data.data.num_classes,
        "channels": data.data.channels,
        "image_size": data.data.image_size,
        "splits": splits,
        "sizes": {s: int(labels[s].size) for s in splits},
        "class_counts": {
            s: np.bincount(labels[s], minlength=data.data.num_classes).tolist()
            for s in splits
        },
    }


def write_partition(
    data: ClientData, pid: int, path: Path, extra: dict[str, Any] | None = None
) -> None:
    """Write client ``pid``'s splits and metadata to ``path`` (``.npz``)."""
    arrays: dict[str, np.ndarray] = {}
    for split in data.indices:
        x, y = data.split_of(pid, split)
        arrays[f"x_{split}"] = x.numpy()
        arrays[f"y_{split}"] = y.numpy()
    meta = {**partition_meta(data, pid), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays["meta"] = np.array(json.dumps(meta))
    with path.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types allow_pickle


def read_partition(path: str | Path) -> PartitionFile:
    """Read a file :func:`write_partition` wrote.

    Raises
    ------
    DatasetNotFoundError
        If ``path`` does not exist.
    DataFormatError
        If it is not a partition file of this format, or an array is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"partition file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "meta" not in npz.files:
                raise DataFormatError(
                    f"{path}: meta is missing (it has {sorted(npz.files)}); export "
                    "the partitions with python -m pflcore.data.partition_files"
                )
            meta = json.loads(str(npz["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                found = meta.get("format") if isinstance(meta, dict) else None
                raise DataFormatError(
                    f"{path}: meta.format is {found!r}; this suite reads "
                    f"{FORMAT!r} (export the partitions again)"
                )
            check_meta(path, meta)
            fields = [f"{xy}_{s}" for s in meta["splits"] for xy in ("x", "y")]
            absent = [f for f in fields if f not in npz.files]
            if absent:
                raise DataFormatError(f"{path}: {absent[0]} is missing")
            arrays = {f: np.asarray(npz[f]) for f in fields}
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, DataFormatError):
            raise
        text = " ".join(str(error).split())
        raise DataFormatError(
            f"{path} is not a readable partition file ({type(error).__name__}: {text})"
        ) from None
    splits = {
        s: check_split(path, s, arrays[f"x_{s}"], arrays[f"y_{s}"], meta)
        for s in meta["splits"]
    }
    return PartitionFile(splits, meta)


META_FIELDS = {
    "partition_id": int,
    "num_partitions": int,
    "dataset": str,
    "num_classes": int,
    "channels": int,
    "image_size": int,
    "splits": list,
}
KIND_NAMES = {int: "an integer", str: "a string", list: "a list"}


def check_meta(path: Path, meta: dict[str, Any]) -> None:
    """The ``meta`` fields a node relies on: present, of their type, in range."""
    for field, kind in META_FIELDS.items():
        value = meta.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataFormatError(
                f"{path}: meta.{field} must be {KIND_NAMES[kind]}, got {value!r}"
            )
    if not 0 <= meta["partition_id"] < meta["num_partitions"]:
        raise DataFormatError(
            f"{path}: meta.partition_id must lie in 0..meta.num_partitions-1="
            f"{meta['num_partitions'] - 1}, got {meta['partition_id']}"
        )
    for field in ("num_classes", "channels", "image_size"):
        if meta[field] < 1:
            raise DataFormatError(f"{path}: meta.{field} must be >= 1")
    if not meta["splits"] or not all(isinstance(s, str) for s in meta["splits"]):
        raise DataFormatError(
            f"{path}: meta.splits must name the splits, got {meta['splits']!r}"
        )


def check_split(
    path: Path, split: str, x: np.ndarray, y: np.ndarray, meta: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's arrays against the file's ``meta``, as tensors."""
    shape = (meta["channels"], meta["image_size"], meta["image_size"])
    if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise DataFormatError(
            f"{path}: x_{split} must be uint8 images of shape (n, {shape[0]}, "
            f"{shape[1]}, {shape[2]}) as meta says, got {x.dtype} {x.shape}"
        )
    if y.dtype != np.int64 or y.ndim != 1 or len(y) != len(x):
        raise DataFormatError(
            f"{path}: y_{split} must be {len(x)} int64 labels (one per image in "
            f"x_{split}), got {y.dtype} {y.shape}"
        )
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < meta["num_classes"]:
        raise DataFormatError(
            f"{path}: y_{split} holds labels {int(y.min())}..{int(y.max())}, "
            f"outside the {meta['num_classes']} classes meta names"
        )
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


def export_partitions(
    data: ClientData, out: Path, extra: dict[str, Any] | None = None
) -> list[Path]:
    """Write every client's file into ``out`` and list them in ``partitions.json``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for pid in range(data.num_clients):
        path = out / f"partition-{pid}.npz"
        write_partition(data, pid, path, extra)
        paths.append(path)
    index = {
        "format": FORMAT,
        "num_partitions": data.num_clients,
        "files": [p.name for p in paths],
        **(extra or {}),
    }
    (out / "partitions.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


def client_data_of(prepared: Any) -> ClientData:
    """The :class:`ClientData` a package's ``prepare`` built."""
    for f in fields(prepared):
        value = getattr(prepared, f.name)
        if isinstance(value, ClientData):
            return value
    raise TypeError(f"{type(prepared).__name__} holds no ClientData")
