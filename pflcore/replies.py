"""The metrics a client replies with, as the strategies in pflcore read them.

A train reply holds ``num-examples`` (the client's training-set size, the
averaging weight), ``train-loss`` and ``partition-id``; an evaluate reply holds
``partition-id`` and the summed counts ``correct``, ``loss-sum`` and
``num-examples`` of one evaluation, so that the server can pool them exactly.
"""

from __future__ import annotations

from flwr.app import MetricRecord

from pflcore.simulation import PARTITION_KEY
from pflcore.training import EvalStats


def train_metrics(
    pid: int, loss: float, num_train: int, **extra: float
) -> MetricRecord:
    """A train reply's metrics.

    Each ``name=value`` in ``extra`` adds a scalar under ``name`` with
    underscores turned into hyphens (``client_s=0.2`` gives ``client-s``).
    """
    return MetricRecord(
        {
            "num-examples": int(num_train),
            "train-loss": float(loss),
            PARTITION_KEY: pid,
            **{k.replace("_", "-"): float(v) for k, v in extra.items()},
        }
    )


def eval_metrics(pid: int, test: EvalStats, **other: EvalStats) -> MetricRecord:
    """An evaluate reply's metrics for the headline evaluation ``test``.

    Each ``name=stats`` in ``other`` adds the same three counts under keys
    prefixed ``name-`` (``val=...`` gives ``val-correct``, ``val-loss-sum``,
    ``val-num-examples``); underscores in ``name`` become hyphens.
    """
    values: dict[str, int | float | list[int] | list[float]] = {PARTITION_KEY: pid}
    for name, stats in (("", test), *other.items()):
        prefix = f"{name.replace('_', '-')}-" if name else ""
        values[f"{prefix}correct"] = int(stats.correct)
        values[f"{prefix}loss-sum"] = float(stats.loss_sum)
        values[f"{prefix}num-examples"] = int(stats.num_samples)
    return MetricRecord(values)
