"""Run a package's entry point in a subprocess and read the run folder it writes.

The runs join one Ray cluster that the test session starts on first use
(:func:`shared_ray_address`), instead of each starting and stopping Ray of its
own: a fresh ``ray.init`` costs 10-25 s on the 2-core machine, joining one
under a second. Tests of the default path (a run that starts its own Ray, as a
user's does) pass ``own_ray=True``; so do the tests that start processes by
other means (``tests/liverun.py``, SuperNodes, ``flwr run``), which never join.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests that start Ray of their own (default ports) or Flower's local SuperLink (a
# fixed port): tests/conftest.py runs them one at a time, whichever worker has them.
OWN_RAY = pytest.mark.own_ray

_cluster = contextlib.ExitStack()
_address: list[str] = []


def shared_ray_address() -> str:
    """The session's Ray cluster (one node, this machine's CPUs), started once.

    Its processes get the environment a run gives its Ray workers when it
    starts Ray itself in quiet mode: this checkout on the path, telemetry off,
    Flower logging errors only.
    """
    if not _address:
        from tests.raycluster import ray_cluster

        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_LOG_LEVEL="ERROR",
        )
        env.pop("RAY_ADDRESS", None)
        cluster = ray_cluster([os.cpu_count() or 1], env)
        _address.append(_cluster.enter_context(cluster))
    return _address[0]


def stop_shared_ray() -> None:
    """Stop the session's cluster, if one was started."""
    _cluster.close()
    _address.clear()


def run_module(
    module: str, *args: str, cwd: Path, timeout: int = 600, own_ray: bool = False
) -> subprocess.CompletedProcess:
    """``python -m module *args`` in ``cwd`` with this checkout first on the path.

    Telemetry is off; stdout and stderr are captured as text. Ray's
    ``RAY_ADDRESS`` makes the run join the session's cluster unless
    ``own_ray``, when it starts Ray itself.
    """
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    if not own_ray:
        env["RAY_ADDRESS"] = shared_ray_address()
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
