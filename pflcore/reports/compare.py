"""Paired comparison of runs on the same partition, client by client.

``python -m pflcore.reports.compare REFERENCE OTHER [OTHER ...] [--last K]`` reads each
run folder's ``clients.csv`` (one row per client and evaluated round) and, for
every OTHER, prints how REFERENCE compares with it on the same clients: the
mean of the per-client accuracy differences after the last round with its
Student-t 95 % interval over clients and the word the published tables use
("above" / "below" only where the interval excludes 0, "tie" otherwise), on how many
clients REFERENCE is higher, lower or equal, the range of the differences, and
each run's mean client accuracy averaged over its last ``K`` evaluated rounds
(one round's number moves by a point or more from round to round on a small
federation). The runs must hold the same partition (identical
``partition.csv``): a paired difference between different clients means
nothing, so that is an error, not a warning. ``--extra before`` also compares
REFERENCE with each OTHER's extra evaluation ``before`` where one was recorded
(FedAvg + FT's ``before_accuracy``: FedAvg's own global model).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pflcore.reports.stats import t_interval, verdict


class CompareError(ValueError):
    """The folders cannot be compared (missing records, different partitions)."""


@dataclass(frozen=True)
class Comparison:
    """REFERENCE against OTHER, in accuracy points (percent)."""

    reference: str
    other: str
    mean_difference: float
    ci_low: float | None
    ci_high: float | None
    word: str
    higher: int
    lower: int
    equal: int
    min_difference: float
    max_difference: float
    reference_last_k: float
    other_last_k: float
    last_k: int

    def line(self) -> str:
        """One line of text for the command line."""
        clients = self.higher + self.lower + self.equal
        ci = (
            "no interval"
            if self.ci_low is None or self.ci_high is None
            else f"95 % CI [{self.ci_low:+.2f}, {self.ci_high:+.2f}] over clients"
        )
        return (
            f"{self.reference} vs {self.other}: final round, mean per-client "
            f"difference {self.mean_difference:+.2f} points, {ci}: {self.word} "
            f"(higher on "
            f"{self.higher}/{clients} clients, lower on {self.lower}, equal on "
            f"{self.equal}; range {self.min_difference:+.2f} to "
            f"{self.max_difference:+.2f}); mean client accuracy over the last "
            f"{self.last_k} evaluated rounds {self.reference_last_k:.2f} vs "
            f"{self.other_last_k:.2f} %"
        )


def read_clients(folder: Path, column: str = "accuracy") -> pd.DataFrame:
    """A run's per-client evaluations as ``round``, ``partition_id``, ``accuracy``.

    ``column`` is the accuracy column to read (e.g. ``before_accuracy``).
    """
    path = folder / "clients.csv"
    if not path.is_file():
        raise CompareError(f"{path} does not exist: not a run folder with records")
    clients = pd.read_csv(path)
    missing = {"round", "partition_id", column} - set(clients.columns)
    if missing:
        raise CompareError(f"{path} lacks the columns {sorted(missing)}")
    clients = clients[["round", "partition_id", column]].rename(
        columns={column: "accuracy"}
    )
    clients = clients.dropna(subset=["accuracy"])
    if clients.empty:
        raise CompareError(f"{path} holds no evaluated round")
    return clients


def has_column(folder: Path, column: str) -> bool:
    """Whether the run's ``clients.csv`` has ``column`` (False without the file)."""
    path = folder / "clients.csv"
    if not path.is_file():
        return False
    return column in pd.read_csv(path, nrows=0).columns


def check_same_partition(reference: Path, other: Path) -> None:
    """Raise :class:`CompareError` unless both runs recorded the same partition."""
    ours, theirs = reference / "partition.csv", other / "partition.csv"
    for path in (ours, theirs):
        if not path.is_file():
            raise CompareError(f"{path} does not exist: cannot check the partition")
    if ours.read_bytes() != theirs.read_bytes():
        raise CompareError(
            f"{ours} and {theirs} differ: the runs are not on the same partition"
        )


def last_k_mean(clients: pd.DataFrame, k: int) -> float:
    """Mean over the last ``k`` evaluated rounds of the mean client accuracy (%)."""
    per_round = clients.groupby("round")["accuracy"].mean().sort_index()
    return float(100 * per_round.iloc[-k:].mean())


def compare(
    reference: Path, other: Path, last_k: int = 5, extra: str | None = None
) -> Comparison:
    """Compare two runs on the same partition, client by client.

    Parameters
    ----------
    reference, other : Path
        Run folders (``clients.csv`` and ``partition.csv``).
    last_k : int
        How many of the last evaluated rounds to average.
    extra : str, optional
        Compare with OTHER's extra evaluation of this prefix
        (``<extra>_accuracy``) instead of its test accuracy.

    Returns
    -------
    Comparison
        Differences are REFERENCE minus OTHER, in accuracy points.

    Raises
    ------
    CompareError
        If a record is missing, the partitions differ, the final rounds
        evaluated different clients, or ``last_k`` is not positive.
    """
    if last_k < 1:
        raise CompareError(f"--last must be at least 1, got {last_k}")
    check_same_partition(reference, other)
    ours = read_clients(reference)
    theirs = read_clients(other, "accuracy" if extra is None else f"{extra}_accuracy")
    final_ours = ours[ours["round"] == ours["round"].max()]
    final_theirs = theirs[theirs["round"] == theirs["round"].max()]
    a = final_ours.set_index("partition_id")["accuracy"]
    b = final_theirs.set_index("partition_id")["accuracy"]
    if set(a.index) != set(b.index):
        raise CompareError(
            f"the last rounds of {reference} and {other} evaluated different clients"
        )
    diff = 100 * (a - b.loc[a.index])
    interval = t_interval(list(diff))
    return Comparison(
        reference=reference.name,
        other=other.name if extra is None else f"{other.name} ({extra})",
        mean_difference=float(diff.mean()),
        ci_low=interval.low,
        ci_high=interval.high,
        word=verdict(interval),
        higher=int((diff > 0).sum()),
        lower=int((diff < 0).sum()),
        equal=int((diff == 0).sum()),
        min_difference=float(diff.min()),
        max_difference=float(diff.max()),
        reference_last_k=last_k_mean(ours, last_k),
        other_last_k=last_k_mean(theirs, last_k),
        last_k=last_k,
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m pflcore.reports.compare REF OTHER ... [--last K]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", type=Path, help="run folder compared with")
    parser.add_argument("others", type=Path, nargs="+", help="run folders")
    parser.add_argument(
        "--last", type=int, default=5, help="evaluated rounds to average (5)"
    )
    parser.add_argument(
        "--extra",
        default=None,
        help="also compare with each other run's extra evaluation PREFIX "
        "where recorded (e.g. before)",
    )
    args = parser.parse_args(argv)
    try:
        for other in args.others:
            print(compare(args.reference, other, args.last).line())
            if args.extra and has_column(other, f"{args.extra}_accuracy"):
                print(compare(args.reference, other, args.last, args.extra).line())
    except CompareError as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
