"""Write every client's partition to its own file, for SuperNodes that hold only theirs.

``python -m pflcore.run.partition_export PACKAGE [key=value ...] --out DIR``
composes ``conf/PACKAGE.yaml`` with the overrides exactly as ``python -m
PACKAGE.main`` does, checks it, loads and partitions the data with the
package's own seeded partition function, and writes one file per client
(:func:`pflcore.data.partition_files.export_partitions`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pflcore.config import ConfigError
from pflcore.data.client_data import ClientData
from pflcore.data.images import DataFormatError, DatasetNotFoundError
from pflcore.data.partition import PartitionError
from pflcore.data.partition_files import client_data_of, export_partitions
from pflcore.run.packages import package_names, prepared_data


def prepare_package(package: str, overrides: list[str]) -> ClientData:
    """Compose, check and partition as ``python -m <package>.main`` would."""
    return client_data_of(prepared_data(package, overrides))


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m pflcore.run.partition_export",
        description="Write every client's partition to its own file.",
    )
    parser.add_argument("package", choices=package_names())
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
