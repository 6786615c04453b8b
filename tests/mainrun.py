"""Run a package's entry point in a subprocess and read the run folder it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def run_module(
    module: str, *args: str, cwd: Path, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m module *args`` in ``cwd`` with this checkout first on the path.

    Telemetry is off; stdout and stderr are captured as text.
    """
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def output_tail(result: subprocess.CompletedProcess, chars: int = 3000) -> str:
    """The last ``chars`` characters of stdout and of stderr, for assertion messages."""
    return result.stdout[-chars:] + result.stderr[-chars:]


def read_run(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A run folder's ``rounds.csv``, ``clients.csv`` and ``summary.json``."""
    return (
        pd.read_csv(folder / "rounds.csv"),
        pd.read_csv(folder / "clients.csv"),
        json.loads((folder / "summary.json").read_text()),
    )
