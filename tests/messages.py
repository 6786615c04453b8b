"""Messages and node contexts for calling a ClientApp directly in a test.

The keys are written out here (not taken from ``pflcore.fl.protocol``) so that
the tests pin the wire format independently of the code they check.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict


def message(kind: str, arrays: ArrayRecord, server_round: int = 1) -> Message:
    """A server message of type ``kind`` carrying ``arrays`` for ``server_round``."""
    content = RecordDict(
        {"arrays": arrays, "config": ConfigRecord({"server-round": server_round})}
    )
    return Message(content, dst_node_id=1, message_type=kind)


def context(pid: int) -> Context:
    """A fresh node context for partition ``pid`` (empty state)."""
    return Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": pid},
        state=RecordDict(),
        run_config={},
    )
