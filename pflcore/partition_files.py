"""One client's data in its own file, for a node that holds only its own data.

``python -m pflcore.partition_files PACKAGE [key=value ...] --out DIR`` composes
``conf/PACKAGE.yaml`` with the overrides exactly as ``python -m PACKAGE.main``
does, checks it, loads and partitions the data with the package's own seeded
partition function, and writes ``DIR/partition-<id>.npz`` for every client:
its ``x_<split>`` (uint8 ``(n, C, H, W)``) and ``y_<split>`` (int64) arrays for
each split the package makes, and a ``meta`` JSON entry (format, partition-id,
number of partitions, dataset, classes, channels, image size, the split sizes
and class counts, the command's overrides). ``DIR/partitions.json`` lists the
files. A deployed client reads only its own file (:func:`read_partition`).

What clients need from the whole population (normalisation constants, the
class count) is not taken from a node's file: it belongs to the server side.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pflcore.data import DataFormatError, DatasetNotFoundError
from pflcore.runtime import ClientData

FORMAT = "pfl-suite partition 1"
PACKAGES = ("fedper", "pfedhn", "perfedavg", "fedfomo")
CONF = Path(__file__).resolve().parents[1] / "conf"


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
            meta = json.loads(str(npz["meta"]))
            if meta.get("format") != FORMAT:
                raise DataFormatError(
                    f"{path} is a {meta.get('format')!r} file; this suite reads "
                    f"{FORMAT!r} (export the partitions again)"
                )
            splits = {
                s: (
                    torch.from_numpy(npz[f"x_{s}"].copy()),
                    torch.from_numpy(npz[f"y_{s}"].copy()),
                )
                for s in meta["splits"]
            }
    except (KeyError, ValueError, OSError) as error:
        if isinstance(error, DataFormatError):
            raise
        raise DataFormatError(
            f"{path} is not a readable partition file ({error})"
        ) from None
    for s, (x, y) in splits.items():
        if x.dtype != torch.uint8 or y.dtype != torch.int64 or x.shape[0] != y.shape[0]:
            raise DataFormatError(
                f"{path}: split {s!r} has the wrong dtypes or lengths"
            )
    return PartitionFile(splits, meta)


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


def prepare_package(package: str, overrides: list[str]) -> ClientData:
    """Compose, check and partition as ``python -m <package>.main`` would."""
    from hydra import compose, initialize_config_dir

    main = importlib.import_module(f"{package}.main")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=package, overrides=overrides)
    return client_data_of(main.prepare(cfg))


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    from pflcore.config import ConfigError
    from pflcore.partition import PartitionError

    parser = argparse.ArgumentParser(
        prog="python -m pflcore.partition_files",
        description="Write every client's partition to its own file.",
    )
    parser.add_argument("package", choices=PACKAGES)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for main")
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    args = parser.parse_args(argv)
    try:
        data = prepare_package(args.package, list(args.overrides))
        paths = export_partitions(
            data,
            args.out.resolve(),
            {"package": args.package, "overrides": list(args.overrides)},
        )
    except (ConfigError, PartitionError, DatasetNotFoundError, DataFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} partition files to {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    raise SystemExit(main())
