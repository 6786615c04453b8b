"""``python -m <package>.main``'s front door: the embedded simulation, or ``flwr run``.

``launcher=embedded`` (the default) runs the composed, checked configuration
on the embedded Ray simulation in this process, with no server to start.
``launcher=flwr`` submits the same configuration, flattened into a run-config
file, to a SuperLink with ``flwr run <package>/flwr_app <superlink>``:
Flower's managed local simulation for a connection whose address is
``:local:`` (the default ``superlink=local``; ``client_resources`` sets the
simulated SuperNodes' shares) or a SuperLink whose SuperNodes are running.
The ServerApp writes the run into this command's run folder either way.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pflcore.apps import OUTPUT_DIR_KEY, AppPackage
from pflcore.common_settings import ClientResources
from pflcore.config import ConfigError
from pflcore.experiment import (
    guarded,
    hydra_output_dir,
    resumed_config,
    run_embedded,
    stop_with,
)
from pflcore.node_data import POPULATION_KEY, population_of
from pflcore.partition_files import client_data_of
from pflcore.results import effective_status

LOCAL_ADDRESSES = (":local:", ":local-in-memory:")
RUN_CONFIG_FILE = "run_config.toml"
# Without it a SuperLink installs each run's dependencies from the network.
OFFLINE = ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


def launch(cfg: DictConfig, package: AppPackage) -> None:
    """Run the experiment ``cfg`` describes with the launcher it names."""
    settings = guarded(lambda: resumed_config(cfg), package.errors)
    if settings is None:  # the run in this folder is complete
        return
    if settings.get("launcher", "embedded") == "embedded":
        run_embedded(guarded(lambda: package.build(settings, None), package.errors))
        return
    config = guarded(lambda: package.resolve(settings), package.errors)
    folder = str(config.get("resume") or hydra_output_dir())
    submit(package, config, str(Path(folder).resolve()))


def app_dir(package: str) -> Path:
    """The Flower app folder of ``package``: its ``pyproject.toml`` names the apps."""
    module = sys.modules.get(package) or __import__(package)
    return Path(str(module.__file__)).parent / "flwr_app"


def toml_value(value: bool | int | float | str) -> str:
    """``value`` as a TOML value (strings as JSON, which TOML basic strings read)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def toml_table(entries: dict[str, Any]) -> str:
    """Flat ``key = value`` lines, every key quoted (dotted keys stay one key)."""
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in entries.items())


def connection_address(name: str) -> str | None:
    """The address of the SuperLink connection ``name`` in ``$FLWR_HOME/config.toml``.

    None when the file does not exist (Flower then creates its default,
    whose ``local`` connection is the managed local simulation).
    """
    home = Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")
    path = home / "config.toml"
    if not path.is_file():
        return ":local:" if name == "local" else None
    try:
        connections = tomllib.loads(path.read_text()).get("superlink", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from exc
    if name not in connections or not isinstance(connections[name], dict):
        raise ConfigError(
            f"superlink={name}: no [superlink.{name}] connection in {path} "
            f"(known: {sorted(k for k in connections if k != 'default')})"
        )
    return str(connections[name].get("address", ""))


def flwr_executable() -> str:
    """The ``flwr`` command of this Python environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / "flwr"
    return str(beside) if beside.is_file() else "flwr"


def flwr_command(
    package: AppPackage, config: dict[str, Any], run_config_file: Path
) -> list[str]:
    """The ``flwr run`` command line that submits ``config``."""
    superlink = str(config.get("superlink") or "local")
    command = [
        flwr_executable(),
        "run",
        str(app_dir(package.name)),
        superlink,
        "--run-config",
        str(run_config_file),
        "--stream",
    ]
    if connection_address(superlink) in LOCAL_ADDRESSES:
        resources = config["client_resources"]
        ClientResources(**resources).fit_this_machine()
        cpus = float(resources["num_cpus"])
        if not cpus.is_integer():  # Flower's simulation config holds whole CPUs
            raise ConfigError(
                "client_resources.num_cpus must be a whole number under "
                f"launcher=flwr with a local simulation, got {cpus:g}"
            )
        command += [
            "--federation-config",
            f"num-supernodes={int(config['num_clients'])} "
            f"client-resources-num-cpus={int(cpus)} "
            f"client-resources-num-gpus={float(resources['num_gpus'])}",
        ]
    return command


def submit(package: AppPackage, config: dict[str, Any], folder: str) -> None:
    """Submit ``config`` with ``flwr run`` and wait for the run to end.

    The run config (every setting, and the absolute output folder) is
    written to ``<folder>/run_config.toml`` first, so the submitted run can
    be read back and resubmitted as it was. For a SuperLink (not a local
    simulation) it also carries the population's class count and channel
    constants, computed here from the data as the embedded simulation does,
    for SuperNodes that read only their own partition file
    (:mod:`pflcore.node_data`).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    run_config_file = out / RUN_CONFIG_FILE
    command = guarded(
        lambda: flwr_command(package, config, run_config_file), (ConfigError,)
    )
    population = ""
    if "--federation-config" not in command:  # SuperNodes that may hold their own data
        data = guarded(lambda: client_data_of(package.prepare(config)), package.errors)
        population = json.dumps(population_of(data))
    entries = {
        **package.run_config(config),
        OUTPUT_DIR_KEY: str(out),
        POPULATION_KEY: population,
    }
    run_config_file.write_text(toml_table(entries))
    env = {**os.environ, OFFLINE[0]: OFFLINE[1]}
    print(f"submitting: {' '.join(command)}", flush=True)
    try:
        code = subprocess.run(command, env=env, check=False).returncode
    except FileNotFoundError:
        stop_with("launcher=flwr: the `flwr` command is not on PATH")
    summary = out / "summary.json"
    local = "--federation-config" in command
    if not summary.is_file():
        if code != 0 or local:  # a local ServerApp writes here: it never started
            stop_with(f"flwr run ended (exit status {code}) with no run in {out}")
        print(f"results: {out} (on the SuperLink's machine)", flush=True)
        return
    status = effective_status(json.loads(summary.read_text()))
    if code != 0 or status != "completed":
        stop_with(f"flwr run ended with status {status} (exit {code}); see {out}")
    print(f"results: {out}", flush=True)
