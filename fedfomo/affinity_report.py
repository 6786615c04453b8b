"""How a FedFomo run's affinity matrix relates to the clients' label overlap.

``python -m fedfomo.affinity_report RUN_FOLDER [--overlap 0.25]`` reads the
run's final affinity matrix (``affinity.csv``: row i holds P_i, the summed
normalised weights client i gave every other client's model) and the clients'
training label counts (``partition.csv``), and prints the mean off-diagonal
affinity between clients whose label distributions overlap by more than
``--overlap`` (overlap = Σ_c min(p_i(c), p_j(c)); two clients with two equal
classes each that share one class overlap by 0.5) and between the others, and
how many off-diagonal entries are positive. A negative P_ij means client j's
models, summed over the rounds, scored worse on client i's validation split
than client i's baseline did (see ``fedfomo/client.py``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


class AffinityReportError(ValueError):
    """The run folder lacks a record or its records disagree."""


@dataclass(frozen=True)
class AffinityReport:
    """Off-diagonal affinities grouped by label overlap."""

    threshold: float
    overlapping_pairs: int
    overlapping_mean: float
    other_pairs: int
    other_mean: float
    positive: int
    entries: int

    def line(self) -> str:
        """One line of text for the command line."""
        return (
            f"pairs with label overlap > {self.threshold:g}: "
            f"{self.overlapping_pairs}, mean affinity {self.overlapping_mean:+.3f}; "
            f"other pairs: {self.other_pairs}, mean {self.other_mean:+.3f}; "
            f"positive off-diagonal entries: {self.positive} of {self.entries}"
        )


def label_overlap(counts: np.ndarray) -> np.ndarray:
    """Pairwise overlap Σ_c min(p_i(c), p_j(c)) of the rows' label distributions."""
    dist = counts / counts.sum(axis=1, keepdims=True)
    return np.minimum(dist[:, None, :], dist[None, :, :]).sum(axis=2)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def report(
    affinity: np.ndarray, counts: np.ndarray, threshold: float
) -> AffinityReport:
    """Group the off-diagonal entries of ``affinity`` by the label overlap.

    Parameters
    ----------
    affinity : numpy.ndarray
        ``(N, N)`` affinity matrix P.
    counts : numpy.ndarray
        ``(N, C)`` training label counts per client.
    threshold : float
        Overlap above which a pair counts as overlapping.
    """
    n = affinity.shape[0]
    if affinity.shape != (n, n) or counts.shape[0] != n:
        raise AffinityReportError(
            f"affinity matrix {affinity.shape} and label counts {counts.shape} "
            "do not describe the same clients"
        )
    off = ~np.eye(n, dtype=bool)
    overlapping = (label_overlap(counts) > threshold) & off
    others = ~overlapping & off
    return AffinityReport(
        threshold=threshold,
        overlapping_pairs=int(overlapping.sum()),
        overlapping_mean=_mean(affinity[overlapping]),
        other_pairs=int(others.sum()),
        other_mean=_mean(affinity[others]),
        positive=int((affinity[off] > 0).sum()),
        entries=int(off.sum()),
    )


def read_run(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The final affinity matrix and the training label counts of a run folder."""
    paths = [folder / "affinity.csv", folder / "partition.csv"]
    for path in paths:
        if not path.is_file():
            raise AffinityReportError(f"{path} does not exist (a FedFomo run folder?)")
    affinity = pd.read_csv(paths[0], index_col="partition_id").sort_index()
    partition = pd.read_csv(paths[1])
    train = partition[partition["split"] == "train"].set_index("partition_id")
    counts = train.filter(regex=r"^c\d+$").sort_index()
    if list(affinity.index) != list(counts.index):
        raise AffinityReportError(f"{paths[0]} and {paths[1]} list different clients")
    return affinity.to_numpy(dtype=float), counts.to_numpy(dtype=float)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m fedfomo.affinity_report RUN_FOLDER``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="FedFomo run folder")
    parser.add_argument(
        "--overlap", type=float, default=0.25, help="overlap threshold (0.25)"
    )
    args = parser.parse_args(argv)
    try:
        affinity, counts = read_run(args.folder)
        print(report(affinity, counts, args.overlap).line())
    except AffinityReportError as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
