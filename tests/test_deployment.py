"""Flower's deployment engine: a SuperLink and three SuperNodes on 127.0.0.1.

Each SuperNode reads only its own exported partition file
(``--node-config "partition-id=J num-partitions=3 data-path=FILE"``); the run
is submitted with ``python -m <package>.main launcher=flwr superlink=test``.
Its ``rounds.csv`` and ``clients.csv`` must equal the embedded simulation's
for the same settings, wall-time columns aside. Every process the test
starts is stopped by its pid (each in its own process group, with whatever
ServerApp or ClientApp processes it spawned).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.mainrun import REPO, output_tail, read_run, run_module
from tests.processes import free_port

pytestmark = pytest.mark.slow

NODES = 3
TIME_COLUMNS = ["time_s", "round_s"]


def wait_until(ready, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if ready():
            return
        time.sleep(0.3)
    raise TimeoutError(f"{what} not ready after {seconds:.0f} s")


def answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


class Processes:
    """Processes started for one test, each leading its own process group."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env, self.started = logs, env, []

    def start(self, name: str, *command: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        proc = subprocess.Popen(
            list(command),
            env=self.env,
            cwd=self.logs,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for proc in self.started:  # children the group leader left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def federation(tmp_path):
    """A SuperLink with three SuperNodes, each on its own exported partition."""

    def start(package: str, overrides: list[str]) -> Path:
        parts = tmp_path / "parts"
        result = run_module(
            "pflcore.run.partition_export",
            package,
            *overrides,
            "--out",
            str(parts),
            cwd=tmp_path,
            timeout=300,
        )
        assert result.returncode == 0, output_tail(result)
        link = free_port()
        processes.start(
            "superlink",
            "flower-superlink",
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(link),
            "--database",
            str(tmp_path / "state.db"),
        )
        wait_until(lambda: answers(link), 60, "SuperLink")
        for pid in range(NODES):
            processes.start(
                f"supernode-{pid}",
                "flower-supernode",
                "--insecure",
                "--superlink",
                f"127.0.0.1:{link}",
                "--port",
                str(free_port()),
                "--node-config",
                f"partition-id={pid} num-partitions={NODES} "
                f'data-path="{parts}/partition-{pid}.npz"',
            )
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "test"\n\n[superlink.test]\n'
            f'address = "127.0.0.1:{link}"\ninsecure = true\n'
        )
        return parts

    home = tmp_path / "flwr-home"
    home.mkdir()
    env = dict(
        os.environ,
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PYTHONPATH=str(REPO),
    )
    processes = Processes(tmp_path, env)
    try:
        yield start, env
    finally:
        processes.stop_all()


def records(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rounds, clients, _ = read_run(folder)
    return rounds.drop(columns=TIME_COLUMNS), clients


CASES = {
    # a personal head that never leaves the node
    "fedper": ["experiment=fedper/quick", f"num_clients={NODES}", "num_rounds=2",
               "algorithm=fedper", "dataset.classes_per_client=4"],
    # one client per round, the hypernetwork on the server
    "pfedhn": ["experiment=pfedhn/quick", f"num_clients={NODES}", "num_rounds=4",
               "eval_every=2", "novel.clients=[]", "novel.rounds=0",
               "partition.val_size=60", "partition.test_size=60"],
    # several models down to each client
    "fedfomo": ["experiment=fedfomo/quick", f"num_clients={NODES}", "num_rounds=2",
                "fomo.num_candidates=2", "partition.shards_per_client=4"],
    # a personal model kept in the node's state beside the uploaded global copy
    "ditto": ["experiment=ditto/quick", f"num_clients={NODES}", "num_rounds=2",
              "partition.shards_per_client=4"],
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(CASES))
def test_supernodes_on_their_own_files_record_what_the_simulation_records(
    tmp_path, federation, package
):
    start, env = federation
    overrides = CASES[package]
    start(package, overrides)
    deployed = tmp_path / "deployed"
    result = subprocess.run(
        [sys.executable, "-m", f"{package}.main", *overrides, "launcher=flwr",
         "superlink=test", f"hydra.run.dir={deployed}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert result.returncode == 0, output_tail(result)
    embedded = tmp_path / "embedded"
    result = run_module(
        f"{package}.main", *overrides, f"hydra.run.dir={embedded}", cwd=tmp_path
    )
    assert result.returncode == 0, output_tail(result)
    ours, theirs = records(deployed), records(embedded)
    assert len(ours[0]) > 0
    pd.testing.assert_frame_equal(ours[0], theirs[0], check_exact=True)
    pd.testing.assert_frame_equal(ours[1], theirs[1], check_exact=True)
    _, _, summary = read_run(deployed)
    assert summary["status"] == "completed"
