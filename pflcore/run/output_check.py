"""Stop before any work when the run folder cannot be written.

Hydra creates the run (or sweep) folder itself and reports a failure as a
traceback; this callback, registered in every package's config
(``hydra.callbacks.output_folder``), checks the folder first (for a sweep,
the sweep folder and each job's folder) and ends the program with one line
naming the setting and the path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def blocked_reason(folder: str | Path) -> str | None:
    """Why ``folder`` could not be created, found without creating anything.

    The checks that need no write: a name too long or holding a NUL, a file
    where a folder must be, an existing folder above it without write
    permission. None when none of them applies.
    """
    text = str(folder)
    if "\x00" in text:
        return "the path holds a NUL character"
    path = Path(text).expanduser().absolute()
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            return f"the name {part[:40]}... is longer than 255 bytes"
    return _blocked_above(path, check_existing=False)


def _blocked_above(path: Path, check_existing: bool) -> str | None:
    """A file on ``path``'s way, or its nearest existing folder not writable.

    With ``check_existing`` false, ``path`` itself, if it exists, is not
    checked for permission (it need not be created). The system's errors
    (an embedded NUL, a name too long) propagate.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"no existing folder above {path}"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    writable = os.access(probe, os.W_OK | os.X_OK)
    if (check_existing or probe != path) and not writable:
        return f"{probe} is not writable"
    return None


def unwritable_reason(folder: str | Path) -> str | None:
    """Why ``folder`` cannot be created and written, or None if it can.

    The common cases get their own words (a file where a folder must be, a
    folder without write permission); anything else is found by doing it:
    the folder is created and a probe file written and removed there, and
    whatever the system refuses (a read-only file system, a name too long,
    a full disk, a NUL in the path, ...) is reported with its reason.
    """
    try:
        path = Path(folder).expanduser().absolute()
        blocked = _blocked_above(path, check_existing=True)
        if blocked is not None:
            return blocked
        path.mkdir(parents=True, exist_ok=True)
        test = path / f".write-test-{os.getpid()}"
        test.write_bytes(b"")
        test.unlink()
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or type(exc).__name__}"
    except ValueError as exc:  # e.g. an embedded NUL character
        return str(exc)
    return None


def _stop_if_unwritable(setting: str, folder: Any) -> None:
    reason = unwritable_reason(str(folder))
    if reason is not None:
        print(
            f"error: {setting}={folder} cannot be written: {reason}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper will expand them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [
        job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch
    ]


def job_subdir(config: DictConfig, number: int, overrides: list[str]) -> str:
    """``hydra.sweep.subdir`` of job ``number`` with its ``overrides`` applied.

    Config-group choices (``experiment=...``) are not composed here; a subdir
    naming a value that only a swept group sets resolves to the base one.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    job = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element().lstrip("+~")
        if OmegaConf.select(job, key, default=None) is not None or "." in key:
            OmegaConf.update(job, key, override.value(), force_add=True)
    OmegaConf.update(job, "hydra.job.num", number, force_add=True)
    OmegaConf.update(job, "hydra.job.id", number, force_add=True)
    return str(OmegaConf.select(job, "hydra.sweep.subdir"))


def _stop_if_a_job_folder_is_blocked(config: DictConfig) -> None:
    """One line, before any job, when a job's folder could not be created."""
    try:
        jobs = sweep_jobs(config)
    except Exception:  # Hydra reports a bad sweep itself
        return
    for number, overrides in enumerate(jobs):
        try:
            subdir = job_subdir(config, number, overrides)
        except Exception:  # an interpolation only the job resolves
            continue
        folder = Path(str(config.hydra.sweep.dir)) / subdir
        reason = blocked_reason(folder)
        if reason is not None:
            print(
                f"error: hydra.sweep.subdir={subdir} (job #{number}: "
                f"{' '.join(overrides)}) cannot be written: {reason}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2)


class OutputFolderCheck(Callback):
    """Hydra callback: check ``hydra.run.dir`` / ``hydra.sweep.dir`` up front."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a single run: its folder."""
        _stop_if_unwritable("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a sweep: the sweep folder."""
        _stop_if_unwritable("hydra.sweep.dir", config.hydra.sweep.dir)
        _stop_if_a_job_folder_is_blocked(config)
