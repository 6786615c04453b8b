"""Every method on one protocol: the runs, their budget, and running what is missing.

``python -m bench.shared_protocol list|budget|run|figure [--jobs N] [--data-root DIR]
[--partition NAME]``
reads ``bench/shared_protocol.toml``. Each method runs on both partitions:
first its grid on the tuning seed with ``tuning=true`` (scored on a held-out
half of each client's validation split, the test split never read), then
the final seeds at the grid point with the highest mean client accuracy.
A run that diverges (stops with a non-finite loss) is recorded with its
rounds up to the divergence: a tuning point that diverged is never chosen,
and a method's row in the final table is computed over the seeds that did
not diverge and names those that did. A run that fails otherwise is not
recorded. Every run goes into ``outputs/shared_protocol/<record>``
(checkpointed, so an interrupted run resumes) and, once complete, is
imported into ``_static/runs/<record>``; a run whose record exists is
skipped. ``figure`` draws each partition's final runs against local work
into ``_static/shared_<partition>.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pflcore.records.results import diverged_round

REPO = Path(__file__).resolve().parents[1]
DECLARATION = REPO / "bench" / "shared_protocol.toml"
RECORDS = REPO / "_static" / "runs"
WORK = REPO / "outputs" / "shared_protocol"
STYLES = ("epochs", "steps", "hypernetwork")


@dataclass(frozen=True)
class Run:
    """One run of the benchmark: a method on a partition, a seed and a grid point."""

    method: str
    partition: str
    seed: int
    tuning: bool
    point: tuple[tuple[str, Any], ...]
    package: str
    overrides: tuple[str, ...]

    @property
    def record(self) -> str:
        """The run's folder below ``_static/runs`` (and below the work folder)."""
        if not self.tuning:  # the chosen point is in the run's config
            return f"shared_{self.partition}/seed{self.seed}/{self.method}"
        name = self.method + "".join(f"_{k}{v}" for k, v in self.point)
        return f"shared_{self.partition}_tuning/seed{self.seed}/{name}"

    def command(self, work: Path) -> list[str]:
        """The command line that makes the run in ``work``."""
        return [
            sys.executable,
            "-m",
            f"{self.package}.main",
            *self.overrides,
            f"hydra.run.dir={work / self.record}",
        ]


def load(path: Path = DECLARATION) -> dict[str, Any]:
    """The declaration, with every method's style checked."""
    with path.open("rb") as f:
        spec = tomllib.load(f)
    for name, method in spec["methods"].items():
        if method["style"] not in STYLES:
            raise SystemExit(f"{path}: methods.{name}.style must be one of {STYLES}")
    return spec


def budget_overrides(spec: dict[str, Any], style: str, passes: int = 1) -> list[str]:
    """Rounds, participation and local work that give every method the same budget.

    Every client passes over its training images ``epochs_per_client``
    times in expectation; each participation is ``passes`` passes
    (``local_epochs``, or ``passes * ceil(train / batch)`` local steps), so a
    run has ``epochs_per_client * clients / (per_round * passes)`` rounds;
    every client is evaluated ``evaluations`` times, at equal local work.
    """
    budget, clients = spec["budget"], int(spec["data"]["clients"])
    per_round = 1 if style == "hypernetwork" else int(budget["clients_per_round"])
    rounds = int(budget["epochs_per_client"]) * clients / (per_round * passes)
    every = rounds / int(budget["evaluations"])
    if not rounds.is_integer() or not every.is_integer():
        raise SystemExit("budget: rounds and evaluation rounds must come out whole")
    train, batch = int(spec["data"]["train_per_client"]), int(budget["batch_size"])
    steps = passes * math.ceil(train / batch)
    local = f"local_epochs={passes}" if style == "epochs" else f"local_steps={steps}"
    return [
        f"num_clients={clients}",
        f"clients_per_round={per_round}",
        f"num_rounds={int(rounds)}",
        f"batch_size={int(budget['batch_size'])}",
        local,
        f"eval_every={int(every)}",
        f"checkpoint_every={int(every)}",
        *budget["overrides"],
    ]


def _grid(method: dict[str, Any]) -> list[tuple[tuple[str, Any], ...]]:
    keys = list(method["grid"])
    values = itertools.product(*(method["grid"][k] for k in keys))
    return [tuple(zip(keys, v, strict=True)) for v in values]


def make_run(
    spec: dict[str, Any],
    method: str,
    partition: str,
    seed: int,
    tuning: bool,
    point: tuple[tuple[str, Any], ...],
) -> Run:
    """The run of ``method`` on ``partition`` at ``seed`` and grid ``point``."""
    m = spec["methods"][method]
    overrides = (
        *spec["data"]["overrides"],
        *spec["partitions"][partition]["overrides"],
        *budget_overrides(spec, m["style"], int(m.get("passes", 1))),
        *m["overrides"],
        *(f"{k}={v}" for k, v in point),
        f"seed={seed}",
        f"tuning={'true' if tuning else 'false'}",
    )
    return Run(method, partition, seed, tuning, point, m["package"], overrides)


def tuning_runs(spec: dict[str, Any]) -> list[Run]:
    """Every grid point of every method on both partitions, on the tuning seed."""
    seed = int(spec["seeds"]["tuning"])
    return [
        make_run(spec, method, partition, seed, True, point)
        for partition in spec["partitions"]
        for method in spec["methods"]
        for point in _grid(spec["methods"][method])
    ]


def mean_accuracy(folder: Path) -> float:
    """Mean client accuracy at the last evaluated round of a recorded run.

    Minus infinity for a run that diverged: it is never the best point.
    """
    if _diverged(folder):
        return -math.inf
    clients = pd.read_csv(folder / "clients.csv")
    last = clients[clients["round"] == clients["round"].max()]
    return float(last["accuracy"].mean())


def _diverged(folder: Path) -> bool:
    path = folder / "summary.json"
    return path.is_file() and diverged_round(json.loads(path.read_text())) is not None


def chosen_point(
    spec: dict[str, Any], method: str, partition: str, records: Path = RECORDS
) -> tuple[tuple[str, Any], ...] | None:
    """The grid point with the highest tuning score, or None until all are recorded.

    Of points with equal scores, the first in the declared grid order. None
    as well when every point diverged (there is nothing to choose).
    """
    runs = [
        r for r in tuning_runs(spec) if (r.method, r.partition) == (method, partition)
    ]
    if not all((records / r.record / "summary.json").is_file() for r in runs):
        return None
    best = max(runs, key=lambda r: mean_accuracy(records / r.record))
    return None if _diverged(records / best.record) else best.point


def final_runs(spec: dict[str, Any], records: Path = RECORDS) -> list[Run]:
    """The final seeds of every method whose grid is complete, at its chosen point.

    Seed by seed (every method's first seed, then every method's second, ...),
    so that a benchmark stopped part-way has whole seeds for its table.
    """
    out = []
    for partition in spec["partitions"]:
        points = {m: chosen_point(spec, m, partition, records) for m in spec["methods"]}
        for seed in spec["seeds"]["final"]:
            for method, point in points.items():
                if point is not None:
                    out.append(
                        make_run(spec, method, partition, int(seed), False, point)
                    )
    return out


def execute(run: Run, data_root: str) -> str:
    """Make ``run`` (resuming its work folder) and import it; a line saying how."""
    work = WORK / run.record
    done = subprocess.run(run.command(WORK), cwd=REPO, check=False)
    diverged = _diverged(work)
    if done.returncode != 0 and not diverged:
        return f"FAILED ({done.returncode}): {run.record}"
    imported = subprocess.run(
        [
            sys.executable,
            "-m",
            "pflcore.reports.import_run",
            str(work),
            str(RECORDS / run.record),
            "--data-root",
            data_root,
            *(["--diverged"] if diverged else []),
        ],
        cwd=REPO,
        check=False,
    )
    if imported.returncode != 0:
        return f"NOT IMPORTED: {run.record}"
    return f"{'diverged' if diverged else 'done'}: {run.record}"


def run_missing(spec: dict[str, Any], jobs: int, data_root: str) -> None:
    """Tuning runs first, then the finals their choices allow; skip recorded runs."""
    for stage in (tuning_runs, final_runs):
        todo = [r for r in stage(spec) if not (RECORDS / r.record).is_dir()]
        print(f"{stage.__name__}: {len(todo)} to run", flush=True)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for line in pool.map(lambda r: execute(r, data_root), todo):
                print(line, flush=True)


def figures(spec: dict[str, Any], records: Path = RECORDS) -> list[Path]:
    """Accuracy against local work, one figure per partition with final records.

    A run that diverged is left out, and its method's label names its seed.
    """
    from pflcore.reports.plots import plot_runs

    labels = {name: method["label"] for name, method in spec["methods"].items()}
    written = []
    for partition, declared in spec["partitions"].items():
        found = sorted((records / f"shared_{partition}").glob("seed*/*"))
        if not found:
            print(f"no final runs of shared_{partition} on record yet")
            continue
        folders: list[str | Path] = [f for f in found if not _diverged(f)]
        names = dict(labels)
        for folder in found:
            if _diverged(folder):
                name, seed = folder.name, folder.parent.name.removeprefix("seed")
                names[name] = f"{names[name]}, seed {seed} diverged"
        written.append(
            plot_runs(
                folders,
                records.parent / f"shared_{partition}.png",
                title=f"Shared protocol, CIFAR-10, {declared['label']}",
                x="passes",
                label_by=lambda run: names[run.folder.name],  # noqa: B023 (called now)
            )
        )
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line: ``list``, ``budget``, ``run`` or ``figure``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("list", "budget", "run", "figure"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--data-root", default="datasets")
    parser.add_argument(
        "--partition", default=None, help="list or run one partition's runs only"
    )
    args = parser.parse_args(argv)
    spec = load()
    if args.partition is not None:
        if args.partition not in spec["partitions"]:
            parser.exit(
                2, f"error: --partition must be one of {list(spec['partitions'])}\n"
            )
        spec = {
            **spec,
            "partitions": {args.partition: spec["partitions"][args.partition]},
        }
    if args.command == "figure":
        for path in figures(spec):
            print(f"wrote {path}")
        return
    if args.command == "run":
        run_missing(spec, args.jobs, args.data_root)
        return
    if args.command == "budget":
        for name, method in spec["methods"].items():
            passes = int(method.get("passes", 1))
            overrides = budget_overrides(spec, method["style"], passes)
            print(f"{name:14s} {' '.join(overrides)}")
        return
    for run in tuning_runs(spec) + final_runs(spec):
        status = "recorded" if (RECORDS / run.record).is_dir() else "missing"
        print(f"{status:9s} {run.record}: {' '.join(run.command(WORK)[2:])}")


if __name__ == "__main__":
    main()
