"""The server strategy: Flower's ``Strategy`` over partition-ids, every round recorded.

Algorithm packages subclass :class:`PartitionStrategy`. It implements Flower's
``Strategy`` contract (the four configure/aggregate hooks, ``summary`` and
``start``) with what every package shares: seeded sampling of partition-ids,
strict checking of replies, dtype-preserving weighted averaging (FedAvg's
server), evaluation every ``eval_every`` rounds on every client, and the
round loop (``start``) that records what the hooks return: one
``rounds.csv`` row per round, one ``clients.csv`` row per evaluated client.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
from flwr.serverapp.strategy import Result, Strategy

from pflcore.config import AVERAGING_RULES
from pflcore.fl.protocol import (
    ARRAYS,
    CONFIG,
    NUM_EXAMPLES,
    PARTITION_KEY,
    SERVER_ROUND,
    TRAIN_LOSS,
    ClientError,
    client_error_reason,
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
    """The :class:`PartitionStrategy` keywords a run's config gives every server."""
    return {key: config[key] for key in SERVER_KEYS}


# Keys of the MetricRecords the hooks return and the round loop records.
TRAIN_CLIENTS = "num-train-clients"
ACCURACY_MEAN = "accuracy-mean"
EVAL_FIELDS = ("partition-id", "correct", "loss-sum", "num-examples")


def train_record(loss: float, num_clients: int) -> MetricRecord:
    """What ``aggregate_train`` returns: the aggregated loss and how many trained."""
    return MetricRecord({TRAIN_LOSS: float(loss), TRAIN_CLIENTS: int(num_clients)})


def _eval_lists(evals: list[ClientEval], prefix: str) -> dict[str, Any]:
    columns: list[list[int] | list[float]] = [
        [e.partition_id for e in evals],
        [int(e.correct) for e in evals],
        [float(e.loss_sum) for e in evals],
        [int(e.num_samples) for e in evals],
    ]
    return {
        f"{prefix}{name}": values
        for name, values in zip(EVAL_FIELDS, columns, strict=True)
    }


def evaluation_record(
    evals: list[ClientEval],
    extra: list[tuple[str, list[ClientEval]]] | None = None,
) -> MetricRecord:
    """What ``aggregate_evaluate`` returns: every client's counts, and their mean.

    Each evaluation is kept per client (lists in partition-id order, named
    as the reply metrics name them), so that the round loop records exactly
    what the clients counted; ``accuracy-mean`` is the across-client mean.
    ``extra`` adds named evaluations (``before``, ``val``) under their prefix.
    """
    values: dict[str, Any] = {
        ACCURACY_MEAN: float(np.mean([e.accuracy for e in evals])),
        **_eval_lists(evals, ""),
    }
    for name, results in extra or []:
        values.update(_eval_lists(results, f"{name}-"))
    return MetricRecord(values)


def evaluations_of(record: MetricRecord, name: str = "") -> list[ClientEval] | None:
    """The per-client evaluation ``name`` in an :func:`evaluation_record`, or None."""
    prefix = f"{name}-" if name else ""
    if f"{prefix}correct" not in record:
        return None
    pids, correct, loss_sum, count = (record[f"{prefix}{k}"] for k in EVAL_FIELDS)
    assert isinstance(pids, list) and isinstance(correct, list)
    assert isinstance(loss_sum, list) and isinstance(count, list)
    return [
        ClientEval(
            partition_id=int(p), correct=int(c), loss_sum=float(s), num_samples=int(n)
        )
        for p, c, s, n in zip(pids, correct, loss_sum, count, strict=True)
    ]


def array_bytes(messages: Iterable[Message]) -> int:
    """Serialized array bytes that ``messages`` carry (error replies carry none)."""
    return sum(
        record.count_bytes()
        for message in messages
        if not message.has_error()
        for record in message.content.array_records.values()
    )


@dataclass
class ServerState:
    """The server state a checkpoint needs beyond the global arrays: none here.

    A strategy that keeps state across rounds (momentum, affinities, a
    hypernetwork) declares it as a dataclass deriving from this one and
    returns it from :meth:`PartitionStrategy.checkpoint_state`.
    """


Hook = Callable[[int, ArrayRecord], None]
"""``hook(server_round, arrays)``: the round loop's ``after_round`` (a checkpoint)."""


class PartitionStrategy(Strategy):
    """Flower's ``Strategy`` over partition-ids, with seeded sampling and records.

    The contract, as Flower's ``Strategy`` states it, is what a package
    overrides; :meth:`start` (the round loop) calls the hooks in this order
    each round and records what they return:

    ``configure_train(round, arrays, config, grid) -> messages``
        The round's training instructions, one :class:`Message` per node
        (addressed through :meth:`messages_to`, or noted with
        :meth:`note_sent`). Here: the global arrays to a seeded sample of
        ``clients_per_round`` partitions (:meth:`train_partitions`).
    ``aggregate_train(round, replies) -> (arrays | None, MetricRecord | None)``
        The new global arrays (None keeps the current ones) and the
        aggregated training metrics, a :func:`train_record`. Here: the mean of
        the uploads (see ``averaging``) and of the train loss.
    ``configure_evaluate(round, arrays, config, grid) -> messages``
        The round's evaluation instructions. Here: the global arrays to every
        client (:meth:`eval_partitions`) on evaluation rounds
        (:meth:`is_eval_round`), none otherwise.
    ``aggregate_evaluate(round, replies) -> MetricRecord | None``
        The clients' evaluations, an :func:`evaluation_record` (None: nothing
        was evaluated). Here: each client's counts on its own test split, and
        the extra evaluations the recorder declares.

    Replies are read with :meth:`check_replies`, which applies the failure
    policy and orders them by partition-id. The loop counts the array bytes
    every message carries, then, after both stages, writes the round's row
    (:meth:`end_round`) and calls ``after_round`` (the checkpoint). State a
    checkpoint needs is one :class:`ServerState` dataclass
    (:meth:`checkpoint_state`, :meth:`restore_state`).

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
        self.recorder = recorder
        self.progress = ProgressPrinter(num_rounds, min_interval_s=progress_every_s)
        self.num_clients = num_clients
        self.clients_per_round = clients_per_round
        self.num_rounds = num_rounds
        self.eval_every = eval_every
        self.sampler = ClientSampler(num_clients, seed)
        self.averaging = averaging
        self.on_client_failure = on_client_failure
        self.sent: list[int] = []
        self.node_of: dict[int, int] = {}

    def summary(self) -> None:
        """Log the strategy's settings (Flower's ``Strategy.summary``)."""
        log.info(
            "%s: %d clients, %d per round, %d rounds, averaging %s",
            type(self).__name__,
            self.num_clients,
            self.clients_per_round,
            self.num_rounds,
            self.averaging,
        )

    # -- the round loop -------------------------------------------------------

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int | None = None,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        *,
        first_round: int = 1,
        before_round: Callable[[], None] | None = None,
        after_round: Hook | None = None,
    ) -> Result:
        """Run rounds ``first_round..num_rounds`` (Flower's ``Strategy.start``).

        Each round: :meth:`train_round`, :meth:`evaluate_round`, Flower's
        ``evaluate_fn`` if given, :meth:`end_round`, then ``after_round``.
        ``before_round`` runs first in each round (the run's stop check).
        Starting at ``first_round`` is what lets a run resume.

        Returns
        -------
        Result
            The global arrays after the last round, and each round's training
            and evaluation metrics.
        """
        last = self.num_rounds if num_rounds is None else num_rounds
        result = Result(arrays=initial_arrays)
        arrays = initial_arrays
        flower_log = logging.getLogger("flwr")  # shown with verbose=true, as Flower's
        for server_round in range(first_round, last + 1):
            if before_round is not None:
                before_round()
            flower_log.info("[ROUND %d/%d]", server_round, last)
            arrays, trained = self.train_round(
                server_round, arrays, grid, timeout, copy.copy(train_config)
            )
            if trained is not None:
                result.train_metrics_clientapp[server_round] = trained
            evaluated = self.evaluate_round(
                server_round, arrays, grid, timeout, copy.copy(evaluate_config)
            )
            if evaluated is not None:
                result.evaluate_metrics_clientapp[server_round] = evaluated
            if evaluate_fn is not None:
                central = evaluate_fn(server_round, arrays)
                if central is not None:
                    result.evaluate_metrics_serverapp[server_round] = central
            self.end_round(server_round, arrays)
            if after_round is not None:
                after_round(server_round, arrays)
        result.arrays = arrays
        return result

    def train_round(
        self,
        server_round: int,
        arrays: ArrayRecord,
        grid: Grid,
        timeout: float,
        config: ConfigRecord | None = None,
    ) -> tuple[ArrayRecord, MetricRecord | None]:
        """Configure, send and aggregate training; record its metrics and bytes."""
        messages = self.configure_train(
            server_round, arrays, config or ConfigRecord(), grid
        )
        replies = self._exchange(messages, grid, timeout)
        aggregated, metrics = self.aggregate_train(server_round, replies)
        self.recorder.add_bytes(received=array_bytes(replies))  # the uploads
        if metrics is not None and TRAIN_CLIENTS in metrics:
            loss, count = scalar(metrics, TRAIN_LOSS), scalar(metrics, TRAIN_CLIENTS)
            self.recorder.log_train(loss, int(count))
        return (arrays if aggregated is None else aggregated), metrics

    def evaluate_round(
        self,
        server_round: int,
        arrays: ArrayRecord,
        grid: Grid,
        timeout: float,
        config: ConfigRecord | None = None,
    ) -> MetricRecord | None:
        """Configure, send and aggregate evaluation; record every client's counts."""
        messages = self.configure_evaluate(
            server_round, arrays, config or ConfigRecord(), grid
        )
        metrics = self.aggregate_evaluate(
            server_round, self._exchange(messages, grid, timeout)
        )
        if metrics is not None:
            evals = evaluations_of(metrics)
            if evals is not None:
                self.recorder.log_eval(evals)
            for name in self.recorder.extra_evals:
                extra = evaluations_of(metrics, name)
                if extra is not None:
                    self.recorder.log_extra_eval(name, extra)
        for name, (header, rows) in self.round_tables().items():
            self.recorder.write_table(name, header, rows)
        return metrics

    def _exchange(
        self, messages: Iterable[Message], grid: Grid, timeout: float
    ) -> list[Message]:
        """Send ``messages``, counting the array bytes they carry; the replies."""
        sent = list(messages)
        self.recorder.add_bytes(sent=array_bytes(sent))
        return list(grid.send_and_receive(sent, timeout=timeout))

    def round_tables(self) -> dict[str, tuple[list[str], list[list[Any]]]]:
        """Files the strategy rewrites each round: ``{name: (header, rows)}``."""
        return {}

    # -- checkpoints ----------------------------------------------------------

    def checkpoint_state(self) -> ServerState:
        """The server state the next round depends on, beyond the global arrays.

        Sampling draws from ``(seed, round)``, so it needs no state; a
        strategy that keeps state returns its own :class:`ServerState`.
        """
        return ServerState()

    def restore_state(self, state: ServerState) -> None:
        """Take back what :meth:`checkpoint_state` returned."""

    # -- identity -------------------------------------------------------------

    def note_sent(self, partitions: list[int]) -> None:
        """Remember who was sent the current stage's messages (for failures)."""
        self.sent = list(partitions)

    def bind_partitions(self, partition_to_node: dict[int, int]) -> None:
        """Learn which node holds which partition (from the query round)."""
        self.node_of = dict(partition_to_node)

    def messages_to(
        self, partitions: list[int], content: RecordDict, message_type: str
    ) -> list[Message]:
        """One message of ``content`` to each of ``partitions`` (noted as sent)."""
        self.note_sent(partitions)
        return [
            Message(content, dst_node_id=self.node_of[p], message_type=message_type)
            for p in partitions
        ]

    def check_replies(
        self,
        replies: Iterable[Message],
        stage: str,
        server_round: int,
        expected: int | None = None,
    ) -> list[RecordDict]:
        """Return the good replies' contents in partition-id order.

        ``expected`` replies (default: one from each partition the stage's
        messages went to). A client that replied with an error, or did not
        reply before the timeout, either stops the run
        (``on_client_failure=stop``: a :class:`ClientError` naming the
        client, the round, the stage and the error) or is recorded and left
        out (``tolerate``). Replies arrive in any order; summing floats in a
        fixed (partition-id) order makes every aggregate, and so the whole
        run, reproducible.
        """
        expected = len(self.sent) if expected is None else expected
        replies = list(replies)
        pid_of = {node: pid for pid, node in self.node_of.items()}
        failures: dict[int, str] = {}
        good: list[tuple[int, Message]] = []
        for reply in replies:
            pid = _sender(reply, pid_of)
            if reply.has_error():
                failures[pid] = client_error_reason(str(reply.error.reason))
            else:
                good.append((pid, reply))
        silent: list[int] = []
        if len(replies) < expected:  # some never answered: name them if known
            replied = {pid for pid, _ in good} | set(failures)
            silent = [p for p in self.sent if p not in replied]
            if len(self.sent) != expected or len(silent) != expected - len(replies):
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
        return self.messages_to(partitions, content, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Mean (see ``averaging``) of the returned arrays and train loss."""
        contents = self.check_replies(replies, "training", server_round)
        if not contents:  # every client failed (tolerated): keep the global model
            return None, train_record(float("nan"), 0)
        arrays = [c.array_records[ARRAYS] for c in contents]
        metrics = [metrics_of(c) for c in contents]
        weights = averaging_weights(
            [scalar(m, NUM_EXAMPLES) for m in metrics], self.averaging
        )
        loss = sum(
            scalar(m, TRAIN_LOSS) * w for m, w in zip(metrics, weights, strict=True)
        )
        aggregated = (
            weighted_average(arrays, weights) if len(arrays[0]) else ArrayRecord()
        )
        return aggregated, train_record(loss / sum(weights), len(contents))

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
            self.note_sent([])
            return []
        config[SERVER_ROUND] = server_round
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        partitions = self.eval_partitions(server_round)
        return self.messages_to(partitions, content, MessageType.EVALUATE)

    def eval_partitions(self, server_round: int) -> list[int]:
        """Partition-ids evaluated after ``server_round``: every client."""
        return list(range(self.num_clients))

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Every client's counts, and the extra evaluations every reply holds."""
        if not self.is_eval_round(server_round):
            return None
        contents = self.check_replies(replies, "evaluation", server_round)
        evals = [client_eval(metrics_of(content)) for content in contents]
        extra = extra_evaluations(contents, self.recorder.extra_evals)
        return evaluation_record(evals, extra)

    # -- end of round ---------------------------------------------------------

    def end_round(self, server_round: int, arrays: ArrayRecord) -> None:
        """Write this round's row and print the progress line."""
        row = self.recorder.end_round(server_round)
        self.progress.update(server_round, row)
