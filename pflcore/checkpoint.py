"""Checkpoints of a run, and resuming it from the last one.

A checkpoint holds everything the next round depends on: the round it was
taken after, the global arrays, the strategy's own state
(:meth:`pflcore.strategy.PartitionFedAvg.checkpoint_state`), the recorder's
rows, and each client's personal state (its ``context.state``). The clients'
state is fetched through the Message API (``query.checkpoint``) and handed
back on resume (``query.restore``), so it works the same when clients run on
other machines. The file is written to a temporary name and renamed over the
previous one, so a crash while writing leaves the previous checkpoint usable.

Resuming (``resume=<run folder>``) reads the run's ``summary.json`` and
checkpoint, refuses settings that would change the result, truncates the
records to the checkpoint's round and continues from there.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
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

from pflcore.config import ConfigError, flatten
from pflcore.data import DataFormatError
from pflcore.protocol import CONFIG, SERVER_ROUND

CHECKPOINT_FILE = "checkpoint.pkl"
# 2: one Local state key for every package (pflcore.baselines.LOCAL_STATE_KEY);
# a format-1 checkpoint's Local clients would silently restart from scratch.
FORMAT = "pfl-suite checkpoint 2"
FORMAT_PREFIX = "pfl-suite checkpoint "
FETCH = "query.checkpoint"
RESTORE = "query.restore"


class CheckpointError(RuntimeError):
    """A client failed to hand over or take back its state."""


# Settings that may change between a run and its resumption: where and how
# fast it runs, never what it computes.
RESUMABLE_KEYS = frozenset(
    {
        "resume",
        "checkpoint_every",
        "inject",
        "on_client_failure",
        "timeout_s",
        "verbose",
        "client_resources",
        "launcher",
        "superlink",
    }
)


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


# -- the file -------------------------------------------------------------------


def write_checkpoint(folder: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically as ``folder/checkpoint.pkl``."""
    path = Path(folder) / CHECKPOINT_FILE
    tmp = path.with_name(f"{CHECKPOINT_FILE}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        pickle.dump({"format": FORMAT, **payload}, handle, protocol=5)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return path


def read_checkpoint(folder: str | Path) -> dict[str, Any]:
    """Read ``folder/checkpoint.pkl``; one clear error when missing or damaged."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(
            f"resume={folder}: no {CHECKPOINT_FILE} there (set checkpoint_every to "
            "write checkpoints)"
        )
    try:
        with path.open("rb") as handle:
            payload = pickle.load(handle)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        text = " ".join(str(exc).split())
        raise DataFormatError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {text})"
        ) from exc
    found = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(found, str) and found.startswith(FORMAT_PREFIX) and found != FORMAT:
        raise DataFormatError(
            f"{path} was written by another version of this suite ({found!r}; this "
            f"one reads {FORMAT!r}): resume it with that version, or start the run anew"
        )
    if found != FORMAT:
        raise DataFormatError(f"{path} is not a checkpoint of this suite")
    return payload


# -- resuming -------------------------------------------------------------------


def changed_setting(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first setting (dotted) that differs and would change the result."""
    before, after = flatten(old), flatten(new)
    for key in sorted(set(before) | set(after)):
        if key.split(".")[0] in RESUMABLE_KEYS:
            continue
        if before.get(key, "<absent>") != after.get(key, "<absent>"):
            return (
                f"{key} (the run used {before.get(key, '<absent>')!r}, "
                f"now {after.get(key, '<absent>')!r})"
            )
    return None


def check_resumable(config: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    """Refuse, in one line naming the setting, a resume that changes the result."""
    changed = changed_setting(checkpoint["config"], config)
    if changed is not None:
        raise ConfigError(
            f"resume={config['resume']}: cannot resume with a changed setting: "
            f"{changed}"
        )
