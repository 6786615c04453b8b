"""Ray clusters on 127.0.0.1 that tests start and stop themselves.

A cluster is started with ``ray start`` in a temporary folder of its own and
stopped by the pids of the processes that mention that folder or its address
(never ``ray stop``, which would stop every Ray on the machine).

Under pytest-xdist each worker may run a cluster while another worker's run
starts Ray of its own, so every node gets worker ports of its own: Ray's
default range (10002-19999) is shared by every Ray on the machine, and two
nodes starting workers at once were seen to bind the same port.
"""

from __future__ import annotations

import contextlib
import itertools
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
WORKER_PORTS_FROM = 20000  # above Ray's default range, below Linux's ephemeral ports
PORTS_PER_NODE = 500
SLOTS_PER_XDIST_WORKER = 8
_nodes_started = itertools.count()


def _own_ports() -> list[str]:
    """``ray start`` options giving the next node ports no other node uses.

    A node's slot is its xdist worker's number times the slots per worker,
    plus a counter of the nodes this process started (mod the slots per
    worker): slots repeat only after a worker started that many nodes, by
    which time the first of them has long been stopped.
    """
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    nth = next(_nodes_started) % SLOTS_PER_XDIST_WORKER
    slot = worker * SLOTS_PER_XDIST_WORKER + nth
    low = WORKER_PORTS_FROM + slot * PORTS_PER_NODE
    return [
        f"--min-worker-port={low}",
        f"--max-worker-port={low + PORTS_PER_NODE - 1}",
        f"--dashboard-agent-listen-port={free_port()}",
    ]


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    """``ray start`` with ``args``; its output in the error when it fails."""
    done = subprocess.run(
        [RAY, "start", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"ray start {' '.join(args)} exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


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
        _ray_start(
            ["--head", f"--port={port}", *common, *_own_ports(),
             f"--num-cpus={node_cpus[0]}", "--include-dashboard=false",
             f"--dashboard-port={dashboard_port}",
             f"--ray-client-server-port={client_port}", f"--temp-dir={temp}"],
            env,
        )  # fmt: skip
        for cpus in node_cpus[1:]:
            _ray_start(
                [f"--address={address}", *common, *_own_ports(), f"--num-cpus={cpus}"],
                env,
            )
        yield address
    finally:
        stop(marks)
        shutil.rmtree(temp, ignore_errors=True)
