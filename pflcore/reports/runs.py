"""One run folder as the published tables read it.

A run's headline numbers are recomputed from its per-client records
(``clients.csv``) at one round, never copied from ``summary.json``:

* ``last``: the last round in ``clients.csv`` (for a run that fits
  held-out clients after training, that is their evaluation);
* ``last_training``: the last evaluated round up to ``num_rounds``;
* ``best_val``: the round ``summary.json["best_val"]["round"]`` names (the
  evaluation with the best validation accuracy).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from pflcore.records.results import diverged_round

ROUNDS = ("last", "last_training", "best_val")
STATISTICS = ("client_mean", "pooled")


class RecordError(ValueError):
    """A run folder lacks what a table needs, or holds something else."""


@dataclass(eq=False)
class RunFolder:
    """A run folder's records, read once.

    Parameters
    ----------
    folder : Path
        The run folder.
    name : str
        How tables and errors name it (its path under the runs root).
    """

    folder: Path
    name: str

    @cached_property
    def summary(self) -> dict[str, Any]:
        """``summary.json``."""
        path = self.folder / "summary.json"
        if not path.is_file():
            raise RecordError(f"{self.name}: no summary.json")
        return dict(json.loads(path.read_text()))

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved configuration."""
        return dict(self.summary.get("config", {}))

    @property
    def seed(self) -> int:
        """The run's seed."""
        seed = self.summary.get("seed", self.config.get("seed"))
        if not isinstance(seed, int):
            raise RecordError(f"{self.name}: summary.json records no seed")
        return seed

    @property
    def status(self) -> str:
        """``completed``, ``failed``, ... as recorded."""
        return str(self.summary.get("status", "unknown"))

    @property
    def diverged_round(self) -> int | None:
        """The round in which the run diverged (None if it did not)."""
        return diverged_round(self.summary)

    @cached_property
    def clients(self) -> pd.DataFrame:
        """``clients.csv``."""
        path = self.folder / "clients.csv"
        if not path.is_file():
            raise RecordError(f"{self.name}: no clients.csv")
        return pd.read_csv(path)

    @cached_property
    def partition_digest(self) -> str:
        """sha256 of ``partition.csv``: runs on one partition share it."""
        path = self.folder / "partition.csv"
        if not path.is_file():
            raise RecordError(f"{self.name}: no partition.csv")
        return hashlib.sha256(path.read_bytes()).hexdigest()

    @cached_property
    def partition(self) -> pd.DataFrame:
        """``partition.csv``."""
        path = self.folder / "partition.csv"
        if not path.is_file():
            raise RecordError(f"{self.name}: no partition.csv")
        return pd.read_csv(path)

    def round_of(self, which: str) -> int:
        """The round ``which`` (see the module docstring) names in this run.

        Raises
        ------
        RecordError
            If the run has no such round.
        """
        rounds = self.clients["round"]
        if rounds.empty:
            raise RecordError(f"{self.name}: clients.csv holds no evaluation")
        if which == "last":
            return int(rounds.max())
        if which == "last_training":
            limit = int(self.config.get("num_rounds", rounds.max()))
            kept = rounds[rounds <= limit]
            if kept.empty:
                raise RecordError(f"{self.name}: no evaluation up to round {limit}")
            return int(kept.max())
        if which == "best_val":
            best = self.summary.get("best_val")
            if not isinstance(best, dict) or "round" not in best:
                raise RecordError(f"{self.name}: summary.json has no best_val.round")
            return int(best["round"])
        raise RecordError(f"unknown round {which!r}; choose one of {ROUNDS}")

    def per_client(self, which: str, column: str = "accuracy") -> pd.Series:
        """Each client's ``column`` at round ``which``, indexed by partition-id.

        Raises
        ------
        RecordError
            If the column is missing or the round evaluated no client.
        """
        if column not in self.clients.columns:
            raise RecordError(f"{self.name}: clients.csv has no column {column!r}")
        rnd = self.round_of(which)
        rows = self.clients[self.clients["round"] == rnd].dropna(subset=[column])
        if rows.empty:
            raise RecordError(f"{self.name}: round {rnd} has no {column!r} value")
        return rows.set_index("partition_id")[column].astype(float).sort_index()

    def value(self, which: str, statistic: str, column: str = "accuracy") -> float:
        """The run-level number: mean of per-client values, or pooled accuracy.

        Pooled accuracy is total correct over total test samples of the
        round's clients (``correct``, ``num_samples``); it exists for the
        headline ``accuracy`` column only.
        """
        if statistic == "client_mean":
            return float(self.per_client(which, column).mean())
        if statistic != "pooled":
            raise RecordError(
                f"unknown statistic {statistic!r}; choose one of {STATISTICS}"
            )
        if column != "accuracy":
            raise RecordError(
                f"{self.name}: pooled accuracy is recorded for 'accuracy' only, "
                f"not {column!r}"
            )
        rnd = self.round_of(which)
        rows = self.clients[self.clients["round"] == rnd]
        total = float(rows["num_samples"].sum())
        if total == 0:
            raise RecordError(f"{self.name}: round {rnd} has no test samples")
        return float(rows["correct"].sum()) / total


def lookup(config: dict[str, Any], key: str) -> Any:
    """The value at dotted ``key`` in ``config`` (``"-"`` where absent)."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return "-"
        node = node[part]
    return node


def find(root: Path, pattern: str) -> list[RunFolder]:
    """The run folders matching the glob ``pattern`` under ``root``, sorted.

    Raises
    ------
    RecordError
        If nothing matches (a table must not silently lose a row).
    """
    folders = sorted(
        path for path in root.glob(pattern) if (path / "summary.json").is_file()
    )
    if not folders:
        raise RecordError(f"no run folder matches {pattern!r} under {root}")
    return [RunFolder(path, path.relative_to(root).as_posix()) for path in folders]
