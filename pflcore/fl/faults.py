"""What a run does when a client fails, and a test-only way to make one fail.

``on_client_failure`` chooses the policy (:class:`FailurePolicy`): ``stop``
(the default) ends the run with one line naming the client, the round, the
stage and the client's error, keeping every finished round; ``tolerate``
completes the round with the replies that arrived (the aggregate is
renormalised over them) and records the failures per round and per client.

``inject.client_failure`` (never set in real runs) makes one client raise,
or sleep past the timeout, in one stage of one round, so both policies can
be tested through the real simulation. The stage ``checkpoint`` is the
client's handing over of its state for the checkpoint after that round; a
sleeping client holds the run in its stage, where tests stop it with a
signal. A client prints one line when its fault fires.
"""

from __future__ import annotations

import time
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from pflcore.fl.identity import partition_id
from pflcore.fl.protocol import SERVER_ROUND, config_int, instruction_of

POLICIES = ("stop", "tolerate")
STAGES = ("train", "evaluate", "checkpoint")


def stage_of(message_type: str) -> str:
    """The stage an instruction of ``message_type`` belongs to."""
    if message_type == "query.checkpoint":
        return "checkpoint"
    return message_type.split(".")[0]  # train.personal is training


class InjectedFailureError(RuntimeError):
    """The failure a test asked a client to raise."""


def injected(fault: dict[str, Any] | None) -> bool:
    """Whether ``inject.client_failure`` names a client to fail."""
    return bool(fault) and fault.get("partition") is not None  # type: ignore[union-attr]


class FaultInjectingApp(ClientApp):
    """A ClientApp that fails one client once, then behaves like ``inner``.

    Parameters
    ----------
    inner : ClientApp
        The package's ClientApp.
    fault : dict
        ``partition``, ``round``, ``stage`` (``train``, ``evaluate`` or
        ``checkpoint``) and
        ``mode``: ``raise`` or ``timeout`` (sleep ``sleep_s`` seconds first).
    """

    def __init__(self, inner: ClientApp, fault: dict[str, Any]) -> None:
        super().__init__()
        self.inner = inner
        self.fault = fault

    def _hits(self, message: Message, context: Context) -> bool:
        if stage_of(message.metadata.message_type) != self.fault["stage"]:
            return False
        if partition_id(context) != int(self.fault["partition"]):
            return False
        instruction = instruction_of(message)
        server_round = config_int(instruction, SERVER_ROUND, default=-1)
        return server_round == int(self.fault["round"])

    def __call__(self, message: Message, context: Context) -> Message:
        """Fail as configured, else run the package's ClientApp."""
        if self._hits(message, context):
            fault = self.fault
            print(
                f"injected fault: client {fault['partition']} "
                f"{'sleeps' if fault.get('mode') == 'timeout' else 'raises'} in "
                f"{fault['stage']} of round {fault['round']}",
                flush=True,
            )
            if fault.get("mode", "raise") == "timeout":
                time.sleep(float(fault.get("sleep_s", 30)))
            else:
                raise InjectedFailureError(
                    f"injected failure of client {self.fault['partition']} "
                    f"in {self.fault['stage']} of round {self.fault['round']}"
                )
        return self.inner(message, context)


def with_faults(app: ClientApp, config: dict[str, Any]) -> ClientApp:
    """``app``, wrapped to fail as ``inject.client_failure`` says (if it does)."""
    fault = (config.get("inject") or {}).get("client_failure")
    if fault is None or not injected(fault):
        return app
    return FaultInjectingApp(app, dict(fault))
