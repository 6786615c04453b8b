"""Per-round and per-client recording, written after every round.

A run folder holds ``rounds.csv``, ``clients.csv``, ``partition.csv`` and
``summary.json``. Every row is flushed as soon as its round ends, so a run
that stops early keeps every round it finished. ``summary.json`` also
records the run's provenance (code commit, data digests, command line; see
:mod:`pflcore.records.provenance`).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import platform
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pflcore.local.training import EvalStats, NonFiniteLossError
from pflcore.records.provenance import portable_json, provenance
from pflcore.records.tracking import make_tracker

ROUND_FIELDS = (
    "round",
    "time_s",
    "round_s",
    "train_loss",
    "test_acc_mean",
    "test_acc_std",
    "test_acc_min",
    "test_acc_p10",
    "test_acc_pooled",
    "test_loss",
    "bytes_sent",
    "bytes_received",
    "num_train_clients",
    "num_eval_clients",
)
CLIENT_FIELDS = ("round", "partition_id", "accuracy", "loss", "correct", "num_samples")


@dataclass(frozen=True, kw_only=True)
class ClientEval(EvalStats):
    """One client's evaluation counts in one round, with its partition-id."""

    partition_id: int


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_status(summary: dict[str, Any]) -> str:
    """A run's status, with a killed run reported as ``interrupted``.

    A ``running`` summary whose process is gone from this machine was killed
    (``kill -9``, a lost session): every round it finished is in
    ``rounds.csv``, and its last checkpoint (if any) resumes it.
    """
    status = str(summary.get("status", "unknown"))
    if status != "running":
        return status
    same_host = summary.get("host") == socket.gethostname()
    pid = summary.get("pid")
    if same_host and isinstance(pid, int) and not pid_alive(pid):
        return "interrupted"
    return status


def diverged_round(summary: dict[str, Any]) -> int | None:
    """The round in which a run diverged, or None if it did not diverge.

    A run diverged when it failed with the suite's non-finite-loss error
    (:class:`~pflcore.local.training.NonFiniteLossError`, raised by a client
    or by the server): its ``rounds_completed`` rounds are on record and the
    next one diverged. Any other failure is not a divergence.
    """
    if summary.get("status") != "failed":
        return None
    if NonFiniteLossError.__name__ not in str(summary.get("error", "")):
        return None
    return int(summary.get("rounds_completed", 0)) + 1


def worst_share_mean(values: Sequence[float] | np.ndarray, share: float = 0.1) -> float:
    """Mean of the lowest ``ceil(share * n)`` values (at least one).

    The "worst 10 %" of a fairness column: with 15 clients, the mean of the
    two lowest client accuracies. Summed as NumPy sums (the records of runs
    already on file were written that way).

    Raises
    ------
    ValueError
        If ``values`` is empty.
    """
    ordered = np.sort(np.asarray(values, dtype=float))
    if ordered.size == 0:
        raise ValueError("no values")
    count = max(1, int(np.ceil(share * ordered.size)))
    return float(ordered[:count].mean())


def summarize_clients(evals: list[ClientEval]) -> dict[str, float]:
    """Across-client statistics of one round's evaluations.

    Mean, std, min and 10th percentile are over clients, unweighted; pooled
    accuracy is total correct over total samples; loss is sample-weighted.
    """
    acc = np.array([e.accuracy for e in evals], dtype=np.float64)
    total = sum(e.num_samples for e in evals)
    return {
        "test_acc_mean": float(acc.mean()),
        "test_acc_std": float(acc.std()),
        "test_acc_min": float(acc.min()),
        "test_acc_p10": float(np.percentile(acc, 10)),
        "test_acc_pooled": sum(e.correct for e in evals) / total if total else 0.0,
        "test_loss": sum(e.loss_sum for e in evals) / total if total else 0.0,
    }


def extra_round_fields(name: str) -> tuple[str, ...]:
    """The ``rounds.csv`` columns of an extra evaluation called ``name``.

    They mirror the headline ``test_*`` columns with ``test`` replaced by
    ``name`` (e.g. ``before_acc_mean`` for an evaluation before adaptation).
    """
    return tuple(
        f"{name}_{field[len('test_') :]}"
        for field in ROUND_FIELDS
        if field.startswith("test_")
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("flwr", "ray", "torch", "torchvision", "hydra-core", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "absent"
    return versions


@functools.lru_cache(maxsize=1)
def _hardware() -> str:
    """CPU cores of this machine, and the GPU the server process sees, if any."""
    import os

    import torch

    text = f"{os.cpu_count()}-core CPU"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


class RunRecorder:
    """Append-only recorder for one run folder.

    Parameters
    ----------
    out_dir : str or Path
        The run folder (Hydra's output directory).
    config : dict
        The resolved configuration, stored in ``summary.json``.
    extra_evals : tuple of str
        Names of evaluations recorded beside the headline one (e.g.
        ``("before",)`` for the model before a personalization step). Each
        adds ``<name>_acc_mean``... columns to ``rounds.csv`` (see
        :func:`extra_round_fields`) and ``<name>_accuracy``, ``<name>_loss``
        to ``clients.csv``; fill them with :meth:`log_extra_eval`.
    extra_fields : tuple of str
        Further ``rounds.csv`` columns after the shared ones (e.g. validation
        accuracy), filled through :meth:`log_extra`; empty where not logged.

    ``config["tracking"]`` (``tensorboard`` or ``wandb``; default ``none``)
    mirrors every ``rounds.csv`` row in that tracker as it is written (see
    :mod:`pflcore.records.tracking`); the tracker is closed when the run ends.
    """

    def __init__(
        self,
        out_dir: str | Path,
        config: dict[str, Any],
        *,
        extra_evals: tuple[str, ...] = (),
        extra_fields: tuple[str, ...] = (),
        resuming: bool = False,
    ) -> None:
        self.extra_evals = tuple(extra_evals)
        self.round_fields = ROUND_FIELDS + tuple(
            f for name in self.extra_evals for f in extra_round_fields(name)
        )
        clash = set(extra_fields) & set(self.round_fields)
        if clash:
            raise ValueError(f"extra rounds.csv fields clash with shared ones: {clash}")
        self.round_fields += tuple(extra_fields)
        self.client_fields = CLIENT_FIELDS + tuple(
            f"{name}_{what}"
            for name in self.extra_evals
            for what in ("accuracy", "loss")
        )
        self._pending_extra: dict[str, list[ClientEval]] = {}
        self._pending_values: dict[str, Any] = {}
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.start = time.time()
        self._last_end = self.start
        self.rows: list[dict[str, Any]] = []
        self._pending_train: dict[str, float] = {}
        self._pending_eval: list[ClientEval] = []
        self._bytes = [0, 0]
        self._extra_summary: dict[str, Any] = {}
        self._pending_failures: list[tuple[int, str, str]] = []
        self.resumed_from: dict[str, Any] | None = None  # a checkpoint, on resume
        self.tracker = make_tracker(config.get("tracking"), self.out_dir, config)
        self.finished = False  # a final summary (completed, failed, ...) is written
        if not resuming:  # a resumed run keeps its records (see restore)
            self._init_csv("rounds.csv", self.round_fields)
            self._init_csv("clients.csv", self.client_fields)
        self.write_summary(status="running")

    def _init_csv(self, name: str, fields: tuple[str, ...]) -> None:
        with (self.out_dir / name).open("w", newline="") as handle:
            csv.writer(handle).writerow(fields)

    def _append(self, name: str, fields: tuple[str, ...], rows: list[dict]) -> None:
        with (self.out_dir / name).open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writerows(rows)

    def write_partition(self, counts: np.ndarray) -> None:
        """Store per-client class counts, shape ``(clients, 2, classes)``."""
        classes = counts.shape[2]
        with (self.out_dir / "partition.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["partition_id", "split", *[f"c{c}" for c in range(classes)]]
            )
            for j in range(counts.shape[0]):
                for s, split in enumerate(("train", "test")):
                    writer.writerow([j, split, *counts[j, s].tolist()])

    def add_bytes(self, sent: int = 0, received: int = 0) -> None:
        """Count serialized array bytes sent to and received from clients."""
        self._bytes[0] += sent
        self._bytes[1] += received

    def log_train(self, train_loss: float, num_clients: int) -> None:
        """Remember this round's aggregated training loss."""
        self._pending_train = {
            "train_loss": train_loss,
            "num_train_clients": num_clients,
        }

    def log_eval(self, evals: list[ClientEval]) -> None:
        """Remember this round's per-client evaluations."""
        self._pending_eval = list(evals)

    def log_extra_eval(self, name: str, evals: list[ClientEval]) -> None:
        """Remember this round's per-client results of the extra evaluation ``name``.

        Raises
        ------
        ValueError
            If ``name`` was not declared in ``extra_evals``.
        """
        if name not in self.extra_evals:
            raise ValueError(
                f"extra evaluation {name!r} was not declared (have {self.extra_evals})"
            )
        self._pending_extra[name] = list(evals)

    def log_failures(self, stage: str, failures: dict[int, str]) -> None:
        """Record clients that failed (tolerated) in this round's ``stage``.

        ``rounds.csv`` gets their count and partition-ids (when declared as
        the ``failed_clients`` and ``failed_partitions`` extra fields) and
        ``failures.csv`` one line per client: round, partition, stage, error.
        """
        self._pending_failures.extend(
            (pid, stage, reason) for pid, reason in sorted(failures.items())
        )

    def log_extra(self, **values: Any) -> None:
        """Remember values for this round's ``extra_fields`` columns of ``rounds.csv``.

        Raises
        ------
        ValueError
            If a name was not declared in ``extra_fields``.
        """
        declared = set(self.round_fields) - set(ROUND_FIELDS)
        unknown = set(values) - declared
        if unknown:
            raise ValueError(f"not declared as extra rounds.csv fields: {unknown}")
        self._pending_values.update(values)

    def write_table(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        """Overwrite ``name`` in the run folder with a CSV of ``header`` and ``rows``.

        For a table a strategy keeps whole and rewrites each round (FedFomo's
        affinity matrix).
        """
        with (self.out_dir / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    def set_summary(self, **values: Any) -> None:
        """Add algorithm-specific entries to ``summary.json``."""
        self._extra_summary.update(values)

    def end_round(self, server_round: int) -> dict[str, Any]:
        """Write this round's rows and the summary; return the round row."""
        now = time.time()
        row: dict[str, Any] = {
            "round": server_round,
            "time_s": round(now - self.start, 3),
            "round_s": round(now - self._last_end, 3),
            "bytes_sent": self._bytes[0],
            "bytes_received": self._bytes[1],
            "train_loss": float("nan"),
            "num_train_clients": 0,
            "num_eval_clients": len(self._pending_eval),
        }
        row.update(self._pending_train)
        row.update(self._pending_values)
        for name, extra in self._pending_extra.items():
            row.update(
                {
                    f"{name}_{key[len('test_') :]}": value
                    for key, value in summarize_clients(extra).items()
                }
            )
        if self._pending_eval:
            row.update(summarize_clients(self._pending_eval))
            client_rows = []
            for e in sorted(self._pending_eval, key=lambda e: e.partition_id):
                client_row: dict[str, Any] = {
                    "round": server_round,
                    "partition_id": e.partition_id,
                    "accuracy": e.accuracy,
                    "loss": e.loss,
                    "correct": e.correct,
                    "num_samples": e.num_samples,
                }
                for name, extra in self._pending_extra.items():
                    for other in extra:
                        if other.partition_id == e.partition_id:
                            client_row[f"{name}_accuracy"] = other.accuracy
                            client_row[f"{name}_loss"] = other.loss
                client_rows.append(client_row)
            self._append("clients.csv", self.client_fields, client_rows)
        if "failed_clients" in self.round_fields:
            row["failed_clients"] = len(self._pending_failures)
            row["failed_partitions"] = ";".join(
                str(pid) for pid, _, _ in self._pending_failures
            )
        if self._pending_failures:
            self._write_failures(server_round)
        self._append("rounds.csv", self.round_fields, [row])
        if self.tracker is not None:
            self.tracker.log_round(row)
        self.rows.append(row)
        self._pending_train, self._pending_eval, self._bytes = {}, [], [0, 0]
        self._pending_extra, self._pending_values = {}, {}
        self._last_end = now
        self.write_summary(status="running")
        return row

    def _write_failures(self, server_round: int) -> None:
        path = self.out_dir / "failures.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["round", "partition_id", "stage", "error"])
            for pid, stage, reason in self._pending_failures:
                writer.writerow([server_round, pid, stage, reason])
        self._pending_failures = []

    def checkpoint_state(self) -> dict[str, Any]:
        """What a resumed run needs to continue these records."""
        return {
            "rows": [dict(r) for r in self.rows],
            "elapsed": time.time() - self.start,
            "summary": dict(self._extra_summary),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the records of a checkpoint: rows after it are dropped.

        ``rounds.csv`` is rewritten from the checkpoint's rows and
        ``clients.csv`` keeps its lines up to the checkpoint's round, so the
        resumed run appends without duplicating or losing a row.
        """
        self.rows = [dict(r) for r in state["rows"]]
        last = int(self.rows[-1]["round"]) if self.rows else 0
        self.start = time.time() - float(state["elapsed"])
        self._extra_summary.update(state.get("summary", {}))
        self._last_end = time.time()
        self._init_csv("rounds.csv", self.round_fields)
        self._append("rounds.csv", self.round_fields, self.rows)
        self._truncate_clients(last)
        self.write_summary(status="running")

    def _truncate_clients(self, last_round: int) -> None:
        path = self.out_dir / "clients.csv"
        with path.open(newline="") as handle:
            lines = list(csv.reader(handle))
        header, body = lines[0], lines[1:]
        index = header.index("round")
        kept = [line for line in body if int(line[index]) <= last_round]
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(kept)

    def write_summary(self, status: str, error: str | None = None) -> None:
        """Rewrite ``summary.json`` (atomically) with final and best figures.

        Any status but ``running`` ends the run: the tracker, if any, is closed.
        """
        self.finished = status != "running"
        if status != "running" and self.tracker is not None:
            self.tracker.close()
            self.tracker = None
        evaluated = [r for r in self.rows if "test_acc_mean" in r]
        summary: dict[str, Any] = {
            "status": status,
            "rounds_completed": len(self.rows),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "wall_time_s": round(time.time() - self.start, 3),
            "seed": self.config.get("seed"),
            "averaging": self.config.get("averaging"),
            "versions": _versions(),
            "hardware": _hardware(),
            "provenance": provenance(self.config),
        }
        if evaluated:
            last = evaluated[-1]
            best = max(evaluated, key=lambda r: r["test_acc_mean"])
            extra = tuple(f"{name}_" for name in self.extra_evals)
            summary["final"] = {
                k: last[k] for k in last if k.startswith(("test_", *extra))
            }
            summary["final"]["round"] = last["round"]
            summary["best_test_acc_mean"] = {
                "round": best["round"],
                "value": best["test_acc_mean"],
                "note": "diagnostic only: selected on test data",
            }
        if error:
            summary["error"] = error
        summary.update(self._extra_summary)
        summary["config"] = self.config
        # records name data by its path under the data root, never this
        # machine's absolute paths (the checkpoint keeps the config as run)
        dataset = self.config.get("dataset")
        root = dataset.get("root") if isinstance(dataset, dict) else None
        portable = portable_json(json.loads(json.dumps(summary, default=str)), root)
        tmp = self.out_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(portable, indent=2))
        tmp.replace(self.out_dir / "summary.json")
