"""Checkpoints of a run, and resuming it from the last one.

A checkpoint holds everything the next round depends on: the round it was
taken after, the global arrays, the strategy's own state
(:meth:`pflcore.fl.strategy.PartitionStrategy.checkpoint_state`), the recorder's
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

from pflcore.config import ConfigError, flatten
from pflcore.data.images import DataFormatError

CHECKPOINT_FILE = "checkpoint.pkl"
# 2: one Local state key for every package (pflcore.fl.baselines.LOCAL_STATE_KEY);
# a format-1 checkpoint's Local clients would silently restart from scratch.
# 3: the server's state is its strategy's ServerState dataclass, not a dict.
FORMAT = "pfl-suite checkpoint 3"
FORMAT_PREFIX = "pfl-suite checkpoint "


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
