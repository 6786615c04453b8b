"""Clients' personal state, handed over to the server and back through the Message API.

A checkpoint (:mod:`pflcore.run.checkpoint`) fetches every client's
``context.state`` with ``query.checkpoint`` and hands it back on resume with
``query.restore``, so it works the same when clients run on other machines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from pflcore.fl.protocol import CONFIG, SERVER_ROUND

FETCH = "query.checkpoint"
RESTORE = "query.restore"


class CheckpointError(RuntimeError):
    """A client failed to hand over or take back its state."""


# -- records <-> plain Python (picklable, no Flower objects) --------------------


def arrays_to_plain(record: ArrayRecord) -> dict[str, np.ndarray]:
    """An ArrayRecord as ``{key: numpy array}``, keys in order."""
    return {key: record[key].numpy().copy() for key in record}


def plain_to_arrays(plain: dict[str, np.ndarray]) -> ArrayRecord:
    """The inverse of :func:`arrays_to_plain`."""
    return ArrayRecord({key: Array(np.asarray(value)) for key, value in plain.items()})


def recorddict_to_plain(content: RecordDict) -> dict[str, Any]:
    """A RecordDict as nested plain values, one entry per record and kind."""
    return {
        "arrays": {k: arrays_to_plain(v) for k, v in content.array_records.items()},
        "metrics": {k: dict(v) for k, v in content.metric_records.items()},
        "configs": {k: dict(v) for k, v in content.config_records.items()},
    }


def plain_to_recorddict(plain: dict[str, Any]) -> RecordDict:
    """The inverse of :func:`recorddict_to_plain`."""
    content = RecordDict()
    for key, arrays in plain["arrays"].items():
        content[key] = plain_to_arrays(arrays)
    for key, metrics in plain["metrics"].items():
        content[key] = MetricRecord(metrics)
    for key, configs in plain["configs"].items():
        content[key] = ConfigRecord(configs)
    return content


# -- the client side: hand over and take back the personal state ----------------


def add_checkpoint_handlers(app: ClientApp) -> None:
    """Register ``query.checkpoint`` and ``query.restore`` on a ClientApp.

    ``checkpoint`` replies with a copy of the node's ``context.state``;
    ``restore`` replaces it with the message's content.
    """

    @app.query("checkpoint")
    def _fetch(msg: Message, context: Context) -> Message:
        return Message(
            plain_to_recorddict(recorddict_to_plain(context.state)), reply_to=msg
        )

    @app.query("restore")
    def _restore(msg: Message, context: Context) -> Message:
        for key in list(context.state.keys()):
            del context.state[key]
        restored = plain_to_recorddict(recorddict_to_plain(msg.content))
        for key, record in restored.items():
            context.state[key] = record
        return Message(RecordDict(), reply_to=msg)


def _exchange(
    grid: Grid, messages: list[Message], timeout: float, what: str
) -> list[Message]:
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    for reply in replies:
        if reply.has_error():
            raise CheckpointError(f"{what}: a client failed: {reply.error.reason}")
    if len(replies) != len(messages):
        raise CheckpointError(
            f"{what}: {len(replies)} of {len(messages)} clients replied"
        )
    return replies


def fetch_client_states(
    grid: Grid, node_of: dict[int, int], timeout: float, server_round: int = 0
) -> dict[int, dict[str, Any]]:
    """Every client's ``context.state``, by partition-id.

    The messages name ``server_round``, the round the checkpoint follows
    (the clients' handler ignores it; ``inject.client_failure`` reads it).
    """
    round_config = ConfigRecord({SERVER_ROUND: int(server_round)})
    messages = [
        Message(
            RecordDict({CONFIG: round_config}), dst_node_id=node, message_type=FETCH
        )
        for node in node_of.values()
    ]
    pid_of = {node: pid for pid, node in node_of.items()}
    return {
        pid_of[reply.metadata.src_node_id]: recorddict_to_plain(reply.content)
        for reply in _exchange(grid, messages, timeout, "checkpoint")
    }


def restore_client_states(
    grid: Grid,
    node_of: dict[int, int],
    states: dict[int, dict[str, Any]],
    timeout: float,
) -> None:
    """Hand each client its saved ``context.state`` back."""
    messages = [
        Message(
            plain_to_recorddict(states[pid]),
            dst_node_id=node,
            message_type=RESTORE,
        )
        for pid, node in node_of.items()
    ]
    _exchange(grid, messages, timeout, "restore")
