"""A FedAvg that addresses clients by partition-id and records every round.

Algorithm packages subclass :class:`PartitionFedAvg`; it adds to Flower's
``FedAvg`` what all of them need: seeded sampling of partition-ids, strict
checking of replies, dtype-preserving weighted averaging, evaluation every
``eval_every`` rounds on every client, and one ``rounds.csv`` row per round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from pflcore.config import AVERAGING_RULES
from pflcore.fl.protocol import (
    ARRAYS,
    CONFIG,
    NUM_EXAMPLES,
    PARTITION_KEY,
    SERVER_ROUND,
    TRAIN_LOSS,
    ClientError,
    eval_counts,
    has_eval,
    metrics_of,
    reply_partition,
    scalar,
)
from pflcore.fl.sampling import ClientSampler
from pflcore.records.progress import ProgressPrinter
from pflcore.records.results import ClientEval, RunRecorder

log = logging.getLogger(__name__)


def averaging_weights(sample_counts: list[float], rule: str) -> list[float]:
    """The weights the server averages client replies with.

    Parameters
    ----------
    sample_counts : list of float
        Each reply's ``num-examples``.
    rule : str
        ``"samples"``: weigh by sample count (McMahan et al.'s FedAvg);
        ``"uniform"``: every reply weighs the same (Fallah et al.'s server).

    Returns
    -------
    list of float
        Unnormalised weights, one per reply.
    """
    if rule not in AVERAGING_RULES:
        raise ValueError(f"averaging must be one of {AVERAGING_RULES}, got {rule!r}")
    if rule == "uniform":
        return [1.0] * len(sample_counts)
    return [float(n) for n in sample_counts]


def weighted_average(records: list[ArrayRecord], weights: list[float]) -> ArrayRecord:
    """Weighted mean of ArrayRecords with identical keys.

    Floating arrays keep their dtype; integer arrays (e.g. BatchNorm's
    ``num_batches_tracked``) are averaged in float64 and rounded back.

    Parameters
    ----------
    records : list of ArrayRecord
        One record per client, all with the same keys.
    weights : list of float
        Non-negative weights, not all zero; normalised here.

    Returns
    -------
    ArrayRecord
        The weighted mean.
    """
    if not records:
        raise ValueError("nothing to average")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must have a positive sum, got {weights}")
    keys = list(records[0].keys())
    for record in records[1:]:
        if list(record.keys()) != keys:
            raise ValueError("replies carry different array keys")
    out = ArrayRecord()
    for key in keys:
        acc = np.zeros(records[0][key].shape, dtype=np.float64)
        for record, weight in zip(records, weights, strict=True):
            acc += record[key].numpy().astype(np.float64) * (weight / total)
        dtype = records[0][key].numpy().dtype
        if np.issubdtype(dtype, np.integer):
            acc = np.rint(acc)
        out[key] = Array(np.asarray(acc.astype(dtype)))  # keeps 0-d shapes
    return out


def _sender(reply: Message, pid_of: dict[int, int]) -> int:
    """The partition-id of a reply's node (from its reply metrics if unmapped)."""
    node = reply.metadata.src_node_id
    if node in pid_of:
        return pid_of[node]
    if not reply.has_error():
        metrics = reply.content.metric_records.get("metrics")
        if metrics is not None and PARTITION_KEY in metrics:
            return reply_partition(metrics)
    return -1


def client_eval(metrics: MetricRecord, name: str = "") -> ClientEval:
    """A client's evaluation ``name`` (see :func:`pflcore.fl.protocol.eval_counts`)."""
    correct, loss_sum, num_samples = eval_counts(metrics, name)
    return ClientEval(
        partition_id=reply_partition(metrics),
        correct=correct,
        loss_sum=loss_sum,
        num_samples=num_samples,
    )


def extra_evaluations(
    contents: list[RecordDict], names: tuple[str, ...]
) -> list[tuple[str, list[ClientEval]]]:
    """Each extra evaluation in ``names`` that every reply in ``contents`` holds.

    An evaluation some reply lacks is left out: its across-client statistics
    would describe a different set of clients than the headline ones.
    """
    metrics = [metrics_of(content) for content in contents]
    found = []
    for name in names:
        if metrics and all(has_eval(m, name) for m in metrics):
            found.append((name, [client_eval(m, name) for m in metrics]))
    return found


SERVER_KEYS = (
    "num_clients",
    "clients_per_round",
    "num_rounds",
    "eval_every",
    "seed",
    "averaging",
    "on_client_failure",
)


def server_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The :class:`PartitionFedAvg` keywords a run's config gives every server."""
    return {key: config[key] for key in SERVER_KEYS}


class PartitionFedAvg(FedAvg):
    """FedAvg over partition-ids with seeded sampling and per-round records.

    Parameters
    ----------
    recorder : RunRecorder
        Where rounds and per-client evaluations are written.
    num_clients : int
        Number of partitions (= SuperNodes).
    clients_per_round : int
        Clients sampled for training each round.
    num_rounds : int
        Total rounds (the last one is always evaluated).
    eval_every : int
        Evaluate all clients every this many rounds; 0 evaluates only the last.
    seed : int
        Seed of the client sampler.
    progress_every_s : float
        Least seconds between two progress lines (first and last round always
        print).
    averaging : str
        The server's averaging rule (the shared ``averaging`` setting):
        ``"samples"`` (default): clients weigh by their ``num-examples``, as
        FedAvg; ``"uniform"``: every sampled client weighs the same (e.g.
        Per-FedAvg's server step). Applies to the arrays and the train loss.
    on_client_failure : str
        ``"stop"`` (default) or ``"tolerate"`` (:mod:`pflcore.fl.faults`).
    """

    def __init__(
        self,
        recorder: RunRecorder,
        *,
        num_clients: int,
        clients_per_round: int,
        num_rounds: int,
        eval_every: int,
        seed: int,
        progress_every_s: float = 10.0,
        averaging: str = "samples",
        on_client_failure: str = "stop",
    ) -> None:
        if averaging not in AVERAGING_RULES:
            raise ValueError(
                f"averaging must be one of {AVERAGING_RULES}, got {averaging!r}"
            )
        super().__init__(
            min_train_nodes=clients_per_round,
            min_evaluate_nodes=num_clients,
            min_available_nodes=num_clients,
            weighted_by_key=NUM_EXAMPLES,
        )
        self.recorder = recorder
        self.progress = ProgressPrinter(num_rounds, min_interval_s=progress_every_s)
        self.num_clients = num_clients
        self.clients_per_round = clients_per_round
        self.num_rounds = num_rounds
        self.eval_every = eval_every
        self.sampler = ClientSampler(num_clients, seed)
        self.averaging = averaging
        self.on_client_failure = on_client_failure
        self._sent: list[int] = []
        self.node_of: dict[int, int] = {}
        self._expected = 0

    # -- checkpoints ----------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Any]:
        """The server state the next round depends on, beyond the global arrays.

        Plain Python and NumPy values only. Sampling draws from
        ``(seed, round)``, so it needs no state; subclasses that keep state
        (momentum, affinities, a hypernetwork) extend this and
        :meth:`restore_state`.
        """
        return {}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`checkpoint_state` returned."""

    # -- identity -------------------------------------------------------------

    def note_sent(self, partitions: list[int]) -> None:
        """Remember who was sent the current stage's messages (for failures)."""
        self._sent = list(partitions)

    def bind_partitions(self, partition_to_node: dict[int, int]) -> None:
        """Learn which node holds which partition (from the query round)."""
        self.node_of = dict(partition_to_node)

    def _messages(
        self, content: RecordDict, partitions: list[int], message_type: str
    ) -> list[Message]:
        self.note_sent(partitions)
        return [
            Message(content, dst_node_id=self.node_of[p], message_type=message_type)
            for p in partitions
        ]

    def check_replies(
        self, replies: Iterable[Message], expected: int, stage: str, server_round: int
    ) -> list[RecordDict]:
        """Return the good replies' contents in partition-id order.

        A client that replied with an error, or did not reply before the
        timeout, either stops the run (``on_client_failure=stop``: a
        :class:`ClientError` naming the client, the round, the stage and
        the error) or is recorded and left out (``tolerate``). Replies arrive
        in any order; summing floats in a fixed (partition-id) order makes
        every aggregate, and so the whole run, reproducible.
        """
        replies = list(replies)
        pid_of = {node: pid for pid, node in self.node_of.items()}
        failures: dict[int, str] = {}
        good: list[tuple[int, Message]] = []
        for reply in replies:
            pid = _sender(reply, pid_of)
            if reply.has_error():
                failures[pid] = " ".join(str(reply.error.reason).split())
            else:
                good.append((pid, reply))
        silent: list[int] = []
        if len(replies) < expected:  # some never answered: name them if known
            replied = {pid for pid, _ in good} | set(failures)
            silent = [p for p in self._sent if p not in replied]
            if len(self._sent) != expected or len(silent) != expected - len(replies):
                silent = [-1] * (expected - len(replies))  # who is unknown
        for pid in silent:
            failures[pid] = "no reply before the timeout"
        if failures:
            self._handle_failures(failures, stage, server_round, len(replies), expected)
        good.sort(key=lambda item: item[0])
        return [reply.content for _, reply in good]

    def _handle_failures(
        self,
        failures: dict[int, str],
        stage: str,
        server_round: int,
        replied: int,
        expected: int,
    ) -> None:
        if self.on_client_failure == "tolerate":
            self.recorder.log_failures(stage, failures)
            return
        pid, reason = min(failures.items())
        if pid < 0:
            raise ClientError(
                f"{stage} of round {server_round}: {replied} of {expected} "
                "clients replied before the timeout"
            )
        others = f" ({len(failures) - 1} more failed)" if len(failures) > 1 else ""
        raise ClientError(
            f"client {pid} failed in {stage} of round {server_round}: {reason}{others}"
        )

    # -- training -------------------------------------------------------------

    def train_partitions(self, server_round: int) -> list[int]:
        """Partition-ids that train in ``server_round``."""
        return self.sampler.sample(server_round, self.clients_per_round)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global arrays to the seeded sample of partitions."""
        partitions = self.train_partitions(server_round)
        config[SERVER_ROUND] = server_round
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        self.recorder.add_bytes(sent=arrays.count_bytes() * len(partitions))
        self._expected = len(partitions)
        return self._messages(content, partitions, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Mean (see ``averaging``) of the returned arrays and train loss."""
        contents = self.check_replies(replies, self._expected, "training", server_round)
        if not contents:  # every client failed (tolerated): keep the global model
            self.recorder.log_train(float("nan"), 0)
            return None, None
        arrays = [c.array_records[ARRAYS] for c in contents]
        metrics = [metrics_of(c) for c in contents]
        weights = averaging_weights(
            [scalar(m, NUM_EXAMPLES) for m in metrics], self.averaging
        )
        self.recorder.add_bytes(received=sum(a.count_bytes() for a in arrays))
        loss = sum(
            scalar(m, TRAIN_LOSS) * w for m, w in zip(metrics, weights, strict=True)
        )
        self.recorder.log_train(loss / sum(weights), len(contents))
        aggregated = (
            weighted_average(arrays, weights) if len(arrays[0]) else ArrayRecord()
        )
        return aggregated, MetricRecord({"train-loss": loss / sum(weights)})

    # -- evaluation -----------------------------------------------------------

    def is_eval_round(self, server_round: int) -> bool:
        """Whether every client is evaluated after ``server_round``."""
        if server_round == self.num_rounds:
            return True
        return self.eval_every > 0 and server_round % self.eval_every == 0

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluate every client on its own test split, on evaluation rounds."""
        if not self.is_eval_round(server_round):
            return []
        config[SERVER_ROUND] = server_round
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        partitions = self.eval_partitions(server_round)
        self.recorder.add_bytes(sent=arrays.count_bytes() * len(partitions))
        return self._messages(content, partitions, MessageType.EVALUATE)

    def eval_partitions(self, server_round: int) -> list[int]:
        """Partition-ids evaluated after ``server_round``: every client."""
        return list(range(self.num_clients))

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Record per-client counts; return the across-client summary."""
        if not self.is_eval_round(server_round):
            return None
        contents = self.check_replies(
            replies, len(self.eval_partitions(server_round)), "evaluation", server_round
        )
        evals = [client_eval(metrics_of(content)) for content in contents]
        self.recorder.log_eval(evals)
        for name, extra in extra_evaluations(contents, self.recorder.extra_evals):
            self.recorder.log_extra_eval(name, extra)
        acc = [e.accuracy for e in evals]
        return MetricRecord({"accuracy-mean": float(np.mean(acc))})

    # -- end of round ---------------------------------------------------------

    def end_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Write this round's row; passed to ``Strategy.start`` as ``evaluate_fn``.

        ``Strategy.start`` calls it once before the first round (round 0), and
        after each round once training and evaluation are done.
        """
        if server_round == 0:
            return None
        row = self.recorder.end_round(server_round)
        self.progress.update(server_round, row)
        return None
