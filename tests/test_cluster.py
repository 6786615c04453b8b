"""``ray_address``: a run joins a running Ray cluster of two nodes on 127.0.0.1.

The test starts a Ray head and a second Ray node (one CPU each), runs FedPer's
quick preset on them, and checks that Flower's client actors ran on both
nodes. Every process the test starts is found by its session folder or port
and stopped by its pid (never ``ray stop``, which would stop every Ray on the
machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.mainrun import REPO, output_tail, read_run
from tests.processes import free_port
from tests.raycluster import ray_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster([1, 1]) as address:  # two nodes of one CPU each
        yield address


def client_actor_nodes(address: str) -> tuple[set[str], set[str]]:
    """(nodes that hosted Flower's client actors, live nodes), asked in a subprocess."""
    probe = (
        "import json, ray, ray._private.state as s\n"
        f"ray.init(address='{address}', logging_level='ERROR', log_to_driver=False)\n"
        "acts = [a for a in s.actors().values()\n"
        "        if a['ActorClassName'] == 'ClientAppActor']\n"
        "print(json.dumps(sorted({a['Address']['NodeID'] for a in acts})))\n"
        "print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])))\n"
    )  # fmt: skip
    out = (
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
        )
        .stdout.strip()
        .splitlines()
    )
    return set(json.loads(out[-2])), set(json.loads(out[-1]))


def test_a_run_with_ray_address_puts_its_clients_on_both_nodes(cluster, tmp_path):
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "fedper.main", "experiment=fedper/quick",
         "algorithm=fedavg", "num_rounds=2", f"ray_address={cluster}",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, output_tail(result)
    rounds, _, summary = read_run(tmp_path)
    assert summary["status"] == "completed" and len(rounds) == 2
    assert summary["config"]["ray_address"] == cluster
    hosts, alive = client_actor_nodes(cluster)
    assert len(alive) == 2 and hosts == alive  # one client actor per 1-CPU node


def test_resources_are_checked_against_the_cluster_not_this_machine(cluster):
    from hydra import compose, initialize_config_dir

    from fedper.settings import parse_settings
    from pflcore.config import ConfigError, to_plain

    # this machine has 2 CPUs, each cluster node 1: a 2-CPU client fits no node
    assert (os.cpu_count() or 1) >= 2
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = to_plain(
            compose(
                "fedper",
                overrides=[
                    f"ray_address={cluster}",
                    "client_resources.num_cpus=2",
                    "experiment=fedper/quick",
                ],
            )
        )
    with pytest.raises(ConfigError, match=r"fit no node of the Ray cluster"):
        parse_settings(config)
    config["client_resources"]["num_cpus"] = 1
    parse_settings(config)  # fits a node


def test_an_address_where_nothing_answers_fails_at_once_in_one_line():
    from pflcore.config import ConfigError
    from pflcore.config.cluster import cluster_nodes

    start = time.time()
    with pytest.raises(ConfigError, match=r"no Ray cluster answers there"):
        cluster_nodes(f"127.0.0.1:{free_port()}")
    assert time.time() - start < 10
