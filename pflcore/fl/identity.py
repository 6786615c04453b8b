"""Client identity: a node's partition-id, and the ``query`` handlers of a ClientApp."""

from __future__ import annotations

from flwr.app import (
    Context,
    Message,
)
from flwr.clientapp import ClientApp

from pflcore.fl.client_state import add_checkpoint_handlers
from pflcore.fl.protocol import PARTITION_KEY, identity_reply


def partition_id(context: Context) -> int:
    """Return the partition-id Flower assigned to this node."""
    return int(context.node_config[PARTITION_KEY])


def add_partition_query(app: ClientApp) -> None:
    """Register the ``query`` handlers every package's ClientApp needs.

    ``query`` tells the server this node's partition-id; ``query.checkpoint``
    and ``query.restore`` hand over and take back the node's personal state
    (:mod:`pflcore.run.checkpoint`).
    """
    add_checkpoint_handlers(app)

    @app.query()
    def _query(msg: Message, context: Context) -> Message:
        return identity_reply(msg, partition_id(context))
