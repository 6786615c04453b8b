"""The messages between the suite's servers and clients: both sides of each.

Every key the packages share is named here once, with the function that
builds it (the sending side) and the one that reads it (the receiving side),
so strategies and clients share this module and never import each other. A
package's own keys live in its ``messages`` module, built on these.

Server to client (``RecordDict``):

* ``"config"`` (:class:`ConfigRecord`): ``server-round`` and the algorithm's
  instructions (:func:`instruction`; read with :func:`instruction_of`,
  :func:`server_round_of`, :func:`config_int`);
* ``"arrays"`` (:class:`ArrayRecord`): the model or the part of it the
  algorithm shares (a package may add records of its own, keyed in its
  ``messages`` module).

Client to server:

* a train reply's ``"metrics"`` (:func:`train_metrics`): ``num-examples``
  (the client's training-set size, the averaging weight), ``train-loss``,
  ``partition-id`` and named extras (read with :func:`scalar`,
  :func:`reply_partition`) and a package's own entries (read with
  :func:`scalar` or :func:`number_list`);
* an evaluate reply's ``"metrics"`` (:func:`eval_metrics`): ``partition-id``
  and the summed counts ``correct``, ``loss-sum``, ``num-examples`` of each
  evaluation, optionally prefixed (``val-``, ``before-``), so that the server
  pools them exactly (read with :func:`eval_counts`);
* the partition query's ``"identity"`` (:func:`identity_reply`, read with
  :func:`identity_of`).
"""

from __future__ import annotations

import re
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from pflcore.local.training import EvalStats

CONFIG = "config"
ARRAYS = "arrays"
METRICS = "metrics"
IDENTITY = "identity"

SERVER_ROUND = "server-round"
PARTITION_KEY = "partition-id"
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"


class ClientError(RuntimeError):
    """A client failed, replied with an error, or did not reply."""


class ProtocolError(ClientError):
    """A message lacks a key its reader needs, or holds the wrong type."""


# Flower writes a client's exception as "<class 'mod.Name'>:<'message'>"; under
# Ray the message is the whole remote traceback, innermost exception first.
_REPLY_ERROR = re.compile(r"<class '(?:[\w.]+\.)?([\w()]+)'>:<'(.*)'>", re.DOTALL)
_RAISED = re.compile(
    r"(?:[A-Za-z_][\w]*\.)*(\w+(?:Error|Exception)): (.+?)"
    r"(?= The above exception| During handling of the above|$)"
)


def client_error_reason(reason: str) -> str:
    """One line naming the exception a client raised, from its error reply.

    ``reason`` is the text of a Flower error reply. The result is
    ``"Name: message"`` for the innermost exception the client raised (not
    the Ray or Flower wrapper around it), or ``reason`` on one line when it
    names no exception (a timeout, an error written by hand).
    """
    flat = " ".join(reason.split())
    outer = _REPLY_ERROR.fullmatch(flat)
    if outer is None:
        return flat
    name, body = outer.groups()
    for inner, message in _RAISED.findall(body):
        if inner not in ("ClientAppException", "RayTaskError"):
            return f"{inner}: {message.strip()}"
    return f"{name}: {body.strip()}"


# -- server to client --------------------------------------------------------


def instruction(server_round: int, **values: Any) -> ConfigRecord:
    """The ``config`` record of a message for ``server_round``.

    Each ``name=value`` in ``values`` adds an entry with underscores in
    ``name`` turned into hyphens (``num_threads=2`` gives ``num-threads``).
    """
    record = ConfigRecord({SERVER_ROUND: int(server_round)})
    for name, value in values.items():
        record[name.replace("_", "-")] = value
    return record


def instruction_of(msg: Message) -> ConfigRecord:
    """The ``config`` record the server sent (empty if none)."""
    return msg.content.config_records.get(CONFIG, ConfigRecord())


def config_int(config: ConfigRecord, key: str, default: int | None = None) -> int:
    """An integer entry of ``config`` (``default`` when absent)."""
    if key not in config:
        if default is None:
            raise ProtocolError(f"a message's config lacks {key!r}")
        return default
    value = config[key]
    if isinstance(value, bool | int | float):
        return int(value)
    raise ProtocolError(f"config entry {key!r} must be a number, got {value!r}")


def server_round_of(msg: Message) -> int:
    """The server round a message was sent in."""
    return config_int(instruction_of(msg), SERVER_ROUND)


# -- client to server --------------------------------------------------------


def train_metrics(
    pid: int, loss: float, num_train: int, **extra: float
) -> MetricRecord:
    """A train reply's metrics.

    Each ``name=value`` in ``extra`` adds a scalar under ``name`` with
    underscores turned into hyphens (``client_s=0.2`` gives ``client-s``).
    """
    return MetricRecord(
        {
            NUM_EXAMPLES: int(num_train),
            TRAIN_LOSS: float(loss),
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


def reply(msg: Message, **records: Any) -> Message:
    """The reply to ``msg`` holding ``records`` (``metrics=..., arrays=...``)."""
    return Message(RecordDict(records), reply_to=msg)


def metrics_of(content: RecordDict) -> MetricRecord:
    """A reply's ``metrics`` record."""
    if METRICS not in content.metric_records:
        raise ProtocolError("a client reply lacks its metrics")
    return content.metric_records[METRICS]


def scalar(record: MetricRecord, key: str) -> float:
    """A scalar metric as float, with a clear error when it is missing."""
    if key not in record:
        raise ProtocolError(f"a client reply lacks the metric {key!r}")
    value = record[key]
    if isinstance(value, list):
        raise ProtocolError(f"metric {key!r} must be a scalar, got a list")
    return float(value)


def reply_partition(record: MetricRecord) -> int:
    """The partition-id a reply's metrics name."""
    return int(scalar(record, PARTITION_KEY))


def eval_counts(record: MetricRecord, name: str = "") -> tuple[int, float, int]:
    """``(correct, loss_sum, num_examples)`` of evaluation ``name`` in a reply.

    ``name`` is the prefix :func:`eval_metrics` used (``""`` for the headline
    evaluation, ``"val"``, ``"before"``).
    """
    prefix = f"{name}-" if name else ""
    return (
        int(scalar(record, f"{prefix}correct")),
        scalar(record, f"{prefix}loss-sum"),
        int(scalar(record, f"{prefix}num-examples")),
    )


def has_eval(record: MetricRecord, name: str = "") -> bool:
    """Whether a reply's metrics hold evaluation ``name``."""
    return f"{name}-correct" in record if name else "correct" in record


def number_list(record: MetricRecord, key: str) -> list[float]:
    """A list-valued metric ``key`` of ``record`` as floats."""
    value = record[key]
    if not isinstance(value, list):
        raise ProtocolError(f"metric {key!r} must be a list, got {value!r}")
    return [float(v) for v in value]


def identity_reply(msg: Message, pid: int) -> Message:
    """A node's answer to the partition query."""
    return Message(
        RecordDict({IDENTITY: ConfigRecord({PARTITION_KEY: int(pid)})}), reply_to=msg
    )


def identity_of(content: RecordDict) -> int:
    """The partition-id a node's answer to the partition query names."""
    record = content.config_records.get(IDENTITY)
    if record is None:
        raise ProtocolError("a node's answer to the partition query lacks its identity")
    return config_int(record, PARTITION_KEY)
