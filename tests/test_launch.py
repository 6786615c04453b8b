"""``pflcore.run.launch``: the ``flwr run`` command line and its run-config file."""

from __future__ import annotations

import math
import tomllib

import pytest

from pflcore.config import ConfigError
from pflcore.run.launch import app_dir, connection_address, flwr_command, toml_table
from pflcore.run.packages import package_of

CONFIG = {
    "num_clients": 7,
    "superlink": "local",
    "client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n\n'
        '[superlink.lab]\naddress = "10.0.0.2:9093"\ninsecure = true\n'
    )
    return tmp_path


def test_a_local_simulation_gets_its_supernodes_and_whole_cpus(home, tmp_path):
    command = flwr_command(package_of("fedper"), CONFIG, tmp_path / "rc.toml")
    assert command[1:5] == ["run", str(app_dir("fedper")), "local", "--run-config"]
    assert "--stream" in command
    federation = command[command.index("--federation-config") + 1]
    assert federation == (
        "num-supernodes=7 client-resources-num-cpus=1 client-resources-num-gpus=0.0"
    )


def test_a_fractional_cpu_share_is_refused_in_one_line(home, tmp_path):
    config = {**CONFIG, "client_resources": {"num_cpus": 0.5, "num_gpus": 0.0}}
    with pytest.raises(ConfigError, match=r"num_cpus must be a whole number.*got 0\.5"):
        flwr_command(package_of("fedper"), config, tmp_path / "rc.toml")


def test_a_superlink_with_supernodes_gets_no_simulation_settings(home, tmp_path):
    config = {**CONFIG, "superlink": "lab"}
    command = flwr_command(package_of("fedper"), config, tmp_path / "rc.toml")
    assert "lab" in command and "--federation-config" not in command
    assert connection_address("lab") == "10.0.0.2:9093"


def test_an_unknown_connection_names_the_file_and_the_known_ones(home):
    with pytest.raises(ConfigError, match=r"superlink=nope: no \[superlink.nope\]"):
        connection_address("nope")


def test_without_a_flower_config_only_local_is_known(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "empty"))
    assert connection_address("local") == ":local:"
    assert connection_address("lab") is None


def test_the_run_config_file_reads_back_as_written():
    entries = {
        "dataset.root": 'C:\\data "x" é',
        "lr": 1e-05,
        "seed": 3,
        "flip": False,
        "inf": math.inf,
        "pfl.json-keys": "a,b",
    }
    assert tomllib.loads(toml_table(entries)) == entries


LATE_SERVERAPP = """
import json, os, socket, sys, time
from pathlib import Path
path = Path(sys.argv[1])
summary = {"status": "running", "rounds_completed": 1, "pid": os.getpid(),
           "host": socket.gethostname()}
path.write_text(json.dumps(summary))
print("written", flush=True)
time.sleep(float(sys.argv[2]))  # a loaded machine: the stop reaches it late
path.write_text(json.dumps({**summary, "status": "failed"}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("late_s", "killed"), [(0.5, False), (30.0, True)])
def test_a_stopped_runs_serverapp_cannot_undo_the_interrupted_mark(
    tmp_path, late_s, killed
):
    """Its own last write first (``failed``), or killed if later; then the mark."""
    import json
    import subprocess
    import sys
    import time

    from pflcore.run.launch import SubmittedRun

    path = tmp_path / "summary.json"
    app = subprocess.Popen(
        [sys.executable, "-c", LATE_SERVERAPP, str(path), str(late_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert app.stdout is not None and app.stdout.readline() == "written\n"
    start = time.monotonic()
    run = SubmittedRun.read(tmp_path)
    waited = time.monotonic() - start
    assert run.rows == [0]
    code = app.wait(timeout=5)
    assert (code == -9) == killed
    assert waited < SubmittedRun.WAIT_S + SubmittedRun.KILL_WAIT_S + 0.5
    time.sleep(0.5)
    assert json.loads(path.read_text())["status"] == "interrupted"
