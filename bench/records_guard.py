"""Guard for refactors: the same commands must give the same records, bit for bit.

``python -m bench.records_guard record OUT [--data-root DIR]`` runs every
package's quick preset (offline data) and, with ``--data-root``, a short run
per package on real data, into ``OUT/<name>/``. After a change, record again
into another folder and ``python -m bench.records_guard compare BEFORE AFTER``:
it compares every ``rounds.csv`` and ``clients.csv`` (wall-time columns
aside) and exits 1 on the first difference, naming the file, the column and
the first differing row.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

WALL_TIME = ("time_s", "round_s")

# name -> (module, overrides); multirun sweeps keep their own subfolders
QUICK = {
    "fedper_quick": ("fedper.main", ["--multirun", "experiment=fedper/quick"]),
    "pfedhn_quick": ("pfedhn.main", ["experiment=pfedhn/quick"]),
    "perfedavg_quick": ("perfedavg.main", ["--multirun", "experiment=perfedavg/quick"]),
    "jiang_quick": ("perfedavg.main", ["experiment=perfedavg/jiang_quick"]),
    "fedfomo_quick": ("fedfomo.main", ["--multirun", "experiment=fedfomo/quick"]),
    # the baselines the quick sweeps leave out
    "pfedhn_baselines": (
        "pfedhn.main",
        [
            "--multirun",
            "experiment=pfedhn/quick",
            "algorithm=fedavg,local",
            "novel.clients=[]",  # novel clients are pFedHN's alone
        ],
    ),
    "perfedavg_baselines": (
        "perfedavg.main",
        ["--multirun", "experiment=perfedavg/quick", "algorithm=fedavg,local"],
    ),
    "fedfomo_fedavg_ft": (
        "fedfomo.main",
        ["--multirun", "experiment=fedfomo/quick", "algorithm=fedavg_ft"],
    ),
}
REAL = {
    "fedper_cifar10": (
        "fedper.main",
        [
            "dataset.source=npz",
            "dataset.path=cifar10/cifar10_train.npz",
            "dataset.pool_test=false",
            "dataset.subset_fraction=0.05",
            "num_rounds=2",
            "local_epochs=1",
        ],
    ),
    "pfedhn_mnist": ("pfedhn.main", ["experiment=pfedhn/mnist", "num_rounds=20"]),
    "perfedavg_mnist": (
        "perfedavg.main",
        ["experiment=perfedavg/mnist_table1", "num_rounds=20"],
    ),
    "fedfomo_cifar10": (
        "fedfomo.main",
        ["experiment=fedfomo/cifar10_cpu", "num_rounds=2", "local_epochs=1"],
    ),
}


def run(name: str, module: str, overrides: list[str], out: Path, env: dict) -> None:
    """One guarded command into ``out/name``."""
    folder = out / name
    where = (
        f"hydra.sweep.dir={folder}"
        if "--multirun" in overrides
        else f"hydra.run.dir={folder}"
    )
    command = [sys.executable, "-m", module, *overrides, where]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, env=env, check=True)


def record(out: Path, data_root: str | None) -> None:
    """Run the guarded commands into ``out``."""
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0")
    jobs = dict(QUICK)
    if data_root:
        env["PFL_DATA_ROOT"] = data_root
        jobs.update(REAL)
    for name, (module, overrides) in jobs.items():
        run(name, module, overrides, out, env)


def _frame(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame.drop(columns=[c for c in WALL_TIME if c in frame.columns])


def compare(before: Path, after: Path) -> list[str]:
    """Differences between two recordings (empty: identical)."""
    problems = []
    names = ("rounds.csv", "clients.csv")
    files = sorted(p.relative_to(before) for n in names for p in before.rglob(n))
    if not files:
        return [f"no records below {before}"]
    for rel in files:
        other = after / rel
        if not other.is_file():
            problems.append(f"{rel}: missing in {after}")
            continue
        a, b = _frame(before / rel), _frame(other)
        if list(a.columns) != list(b.columns):
            problems.append(f"{rel}: columns {list(a.columns)} != {list(b.columns)}")
            continue
        if len(a) != len(b):
            problems.append(f"{rel}: {len(a)} rows != {len(b)} rows")
            continue
        for column in a.columns:
            differ = a[column] != b[column]
            if differ.any():
                row = int(differ.idxmax())
                problems.append(
                    f"{rel}: column {column}, row {row}: "
                    f"{a[column][row]} != {b[column][row]}"
                )
                break
    return problems


def main(argv: list[str] | None = None) -> None:
    """Command line: ``record OUT [--data-root DIR]`` or ``compare BEFORE AFTER``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--data-root", default=None)
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.out, args.data_root)
        return
    problems = compare(args.before, args.after)
    for line in problems:
        print(line)
    if problems:
        raise SystemExit(1)
    print(f"identical records in {args.before} and {args.after} (wall time aside)")


if __name__ == "__main__":
    main()
