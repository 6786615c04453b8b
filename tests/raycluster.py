"""Ray clusters on 127.0.0.1 that tests start and stop themselves.

A cluster is started with ``ray start`` in a temporary folder of its own and
stopped by the pids of the processes that mention that folder or its address
(never ``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pflcore.run.reaper import below as processes_below
from tests.processes import free_port, pids_mentioning

RAY = str(Path(sys.executable).with_name("ray"))


def stop(marks: list[str]) -> None:
    """SIGTERM, then SIGKILL, every process whose command line holds a mark.

    The processes below them go too: Ray's agents rename their command lines
    (``ray::DashboardAgent``) and outlive a stopped raylet.
    """
    below = processes_below(pids_mentioning(marks))

    def running() -> list[int]:
        alive = [pid for pid in below if Path(f"/proc/{pid}").exists()]
        return sorted(set(pids_mentioning(marks)) | set(alive))

    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + wait
        while running() and time.time() < deadline:
            time.sleep(0.2)
        if not running():
            return


@contextlib.contextmanager
def ray_cluster(
    node_cpus: list[int], env: dict[str, str] | None = None
) -> Iterator[str]:
    """A head node and one more node per further entry; yields the head's address.

    Parameters
    ----------
    node_cpus : list of int
        CPUs of each node, the head first.
    env : dict, optional
        The environment of every node's processes (Ray's workers inherit it);
        this process's by default.
    """
    temp = tempfile.mkdtemp(prefix="pflray", dir="/tmp")  # short: Ray's socket paths
    port, client_port, dashboard_port = free_port(), free_port(), free_port()
    address = f"127.0.0.1:{port}"
    # Ray's client server names the machine's own IP, not 127.0.0.1: found by its port
    marks = [temp, address, f"--port={client_port}"]
    env = {**(os.environ if env is None else env), "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [RAY, "start", "--head", f"--port={port}", *common,
             f"--num-cpus={node_cpus[0]}", "--include-dashboard=false",
             f"--dashboard-port={dashboard_port}",
             f"--ray-client-server-port={client_port}", f"--temp-dir={temp}"],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        for cpus in node_cpus[1:]:
            subprocess.run(
                [RAY, "start", f"--address={address}", *common, f"--num-cpus={cpus}"],
                env=env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        yield address
    finally:
        stop(marks)
        shutil.rmtree(temp, ignore_errors=True)
