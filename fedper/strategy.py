"""FedPer's server: FedAvg over the base layers only (paper Algorithm 2).

The server holds and averages ``W_B`` with weights ``n_j / sum_l n_l`` over
the clients of the round. Personal layers never reach it: a reply that
carries any key outside the base is rejected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord

from pflcore.fl.protocol import ARRAYS, ClientError
from pflcore.fl.strategy import PartitionStrategy
from pflcore.records.results import RunRecorder


class FedPer(PartitionStrategy):
    """Sample-weighted averaging of the base layers.

    Parameters
    ----------
    recorder : RunRecorder
        Run recorder.
    base_keys : list of str
        State-dict keys of the shared base (all keys for FedAvg, none for
        local training).
    **kwargs
        Passed to :class:`pflcore.fl.strategy.PartitionStrategy`.
    """

    def __init__(
        self, recorder: RunRecorder, *, base_keys: list[str], **kwargs: Any
    ) -> None:
        super().__init__(recorder, **kwargs)
        self.base_keys = list(base_keys)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check every reply holds exactly the base keys, then average."""
        replies = list(replies)
        for reply in replies:
            if reply.has_error():
                continue  # reported by the parent with the client's partition-id
            keys = list(reply.content.array_records[ARRAYS].keys())
            if keys != self.base_keys:
                extra = sorted(set(keys) - set(self.base_keys))
                raise ClientError(
                    f"round {server_round}: a client sent keys other than the base "
                    f"(unexpected: {extra[:5]}, missing: "
                    f"{sorted(set(self.base_keys) - set(keys))[:5]})"
                )
        return super().aggregate_train(server_round, replies)
