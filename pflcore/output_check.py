"""Stop before any work when the run folder cannot be written.

Hydra creates the run (or sweep) folder itself and reports a failure as a
traceback; this callback, registered in every package's config
(``hydra.callbacks.output_folder``), checks the folder first and ends the
program with one line naming the setting and the path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


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
        probe = path
        while not probe.exists():
            if probe.parent == probe:
                return f"no existing folder above {path}"
            probe = probe.parent
        if not probe.is_dir():
            return f"{probe} is a file, not a folder"
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"{probe} is not writable"
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


class OutputFolderCheck(Callback):
    """Hydra callback: check ``hydra.run.dir`` / ``hydra.sweep.dir`` up front."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a single run: its folder."""
        _stop_if_unwritable("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a sweep: the sweep folder."""
        _stop_if_unwritable("hydra.sweep.dir", config.hydra.sweep.dir)
