"""``launcher=flwr``: the same run through ``flwr run`` and Flower's managed SuperLink.

``python -m <package>.main ... launcher=flwr`` writes the run config, and
``flwr run <package>/flwr_app local`` starts Flower's managed local SuperLink
(simulation, Ray backend), whose ServerApp and ClientApps are the packages'
module-level apps reading ``context.run_config``. Every record must equal
the embedded simulation's for the same seed, wall-time columns aside.

The managed SuperLink listens on fixed local ports and outlives ``flwr run``;
each test gives Flower a private ``FLWR_HOME`` and stops the SuperLink it
started (found by that home in its command line) by its pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from flwr.cli.constant import LOCAL_SUPERLINK_HTTP_API_PORT

from tests.mainrun import OWN_RAY, output_tail, read_run, run_module
from tests.processes import pids_mentioning

pytestmark = [pytest.mark.slow, OWN_RAY]

TIME_COLUMNS = ["time_s", "round_s"]
HEALTH = f"http://127.0.0.1:{LOCAL_SUPERLINK_HTTP_API_PORT}/health"


def superlink_running() -> bool:
    try:
        return httpx.get(HEALTH, timeout=1.0).is_success
    except httpx.HTTPError:
        return False


def stop(pids: list[int]) -> None:
    """SIGTERM each pid's process group (the SuperLink starts its own), then SIGKILL."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)


@pytest.fixture
def flwr_home(tmp_path, monkeypatch):
    if not Path("/proc").is_dir():
        pytest.skip("finds the SuperLink's pid in /proc")
    if superlink_running():
        pytest.skip("a managed local SuperLink is already running on this machine")
    home = tmp_path / "flwr-home"
    home.mkdir()
    monkeypatch.setenv("FLWR_HOME", str(home))
    yield home
    stop(pids_mentioning([f"{home}/local-superlink"]))
    assert not superlink_running(), "the managed SuperLink is still running"


def records(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    rounds, clients, summary = read_run(folder)
    return rounds.drop(columns=TIME_COLUMNS), clients, summary


@pytest.mark.parametrize(
    ("package", "overrides"),
    [
        ("fedper", ["experiment=fedper/quick", "num_rounds=2", "algorithm=fedper"]),
        (
            "pfedhn",
            ["experiment=pfedhn/quick", "num_rounds=6", "eval_every=3",
             "algorithm=pfedhn"],
        ),
        ("ditto", ["experiment=ditto/quick", "num_rounds=2", "num_clients=6"]),
    ],
)  # fmt: skip
def test_flwr_run_records_what_the_embedded_simulation_records(
    tmp_path, flwr_home, package, overrides
):
    folders = {}
    for launcher in ("embedded", "flwr"):
        folder = tmp_path / launcher
        result = run_module(
            f"{package}.main",
            *overrides,
            f"launcher={launcher}",
            f"hydra.run.dir={folder}",
            cwd=tmp_path,
            timeout=400,
        )
        assert result.returncode == 0, output_tail(result)
        folders[launcher] = folder
    assert (folders["flwr"] / "run_config.toml").is_file()
    embedded, deployed = records(folders["embedded"]), records(folders["flwr"])
    pd.testing.assert_frame_equal(embedded[0], deployed[0], check_exact=True)
    pd.testing.assert_frame_equal(embedded[1], deployed[1], check_exact=True)
    assert deployed[2]["status"] == "completed"
    assert deployed[2]["config"]["launcher"] == "flwr"
    assert {k: v for k, v in deployed[2]["config"].items() if k != "launcher"} == {
        k: v for k, v in embedded[2]["config"].items() if k != "launcher"
    }
