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

import contextlib
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from omegaconf import DictConfig

from pflcore.config import ConfigError
from pflcore.config.shared import ClientResources
from pflcore.data.node_data import POPULATION_KEY, population_of
from pflcore.data.partition_files import client_data_of
from pflcore.records.results import effective_status, pid_alive
from pflcore.run.apps import OUTPUT_DIR_KEY
from pflcore.run.experiment import (
    command_resuming,
    guarded,
    hydra_output_dir,
    resumed_config,
    run_embedded,
    stop_with,
)
from pflcore.run.stopping import (
    StopSignal,
    allow_grace,
    expect_run,
    start_reaper,
    watch,
)

if TYPE_CHECKING:  # the package base imports this module for its entry point
    from pflcore.run.package import AlgorithmPackage

LOCAL_ADDRESSES = (":local:", ":local-in-memory:")
RUN_CONFIG_FILE = "run_config.toml"
# Without it a SuperLink installs each run's dependencies from the network.
OFFLINE = ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")


def launch(cfg: DictConfig, package: AlgorithmPackage) -> None:
    """Run the experiment ``cfg`` describes with the launcher it names."""
    expect_run(command_resuming(hydra_output_dir()))
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
    package: AlgorithmPackage, config: dict[str, Any], run_config_file: Path
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


def submit(package: AlgorithmPackage, config: dict[str, Any], folder: str) -> None:
    """Submit ``config`` with ``flwr run`` and wait for the run to end.

    The run config (every setting, and the absolute output folder) is
    written to ``<folder>/run_config.toml`` first, so the submitted run can
    be read back and resubmitted as it was. For a SuperLink (not a local
    simulation) it also carries the population's class count and channel
    constants, computed here from the data as the embedded simulation does,
    for SuperNodes that read only their own partition file
    (:mod:`pflcore.data.node_data`).
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
    start_reaper()
    allow_grace(STOP_GRACE_S)
    try:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        stop_with("launcher=flwr: the `flwr` command is not on PATH")
    output = FlwrOutput(process.stdout)
    try:
        code = process.wait()
        output.join()
    except StopSignal:
        watch(SubmittedRun.peek(out), checkpoint_known=False)  # if forced to end
        stop_submitted(process, output.run_id, str(config.get("superlink") or "local"))
        watch(SubmittedRun.read(out), checkpoint_known=False)
        raise
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


RUN_STARTED = "Successfully started run "
# signal to forced end under launcher=flwr: stopping the run on the SuperLink and
# waiting for its ServerApp's last write take seconds (the promise is 10 s)
STOP_GRACE_S = 8.0


class FlwrOutput:
    """Passes ``flwr run``'s output on as it comes and notes the run id it prints."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.run_id: int | None = None
        self._thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        self._thread.start()

    def _copy(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        for line in stream:
            sys.stdout.write(line)
            sys.stdout.flush()
            if RUN_STARTED in line and self.run_id is None:
                word = line.split(RUN_STARTED, 1)[1].split()[0]
                self.run_id = int(word) if word.isdigit() else None

    def join(self) -> None:
        """Wait until all of the output has been passed on."""
        self._thread.join(timeout=5)


def stop_submitted(
    process: subprocess.Popen[str], run_id: int | None, superlink: str
) -> None:
    """Stop a run submitted with ``flwr run``: on the SuperLink, then the CLI.

    The SuperLink stops the run's ServerApp and simulation; the local
    ``flwr run`` (streaming the logs) is ended too.
    """
    if run_id is not None:
        try:
            stop_run_on_superlink(superlink, run_id)
        except Exception as exc:  # the SuperLink may be gone already
            text = " ".join(str(exc).split())
            print(
                f"warning: could not stop run {run_id} on superlink={superlink} "
                f"({type(exc).__name__}: {text}); stop it with "
                f"`flwr stop {run_id} {superlink}`",
                file=sys.stderr,
                flush=True,
            )
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()


def stop_run_on_superlink(superlink: str, run_id: int) -> None:
    """``flwr stop RUN_ID SUPERLINK``, in this process (no second CLI to start)."""
    import logging

    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.proto.control_pb2 import StopRunRequest

    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    with contextlib.redirect_stdout(io.StringIO()):  # "Using SuperLink: ..."
        connection = read_superlink_connection(superlink)
    client = init_http_client_from_connection(connection)
    try:
        client.StopRun(request=StopRunRequest(run_id=run_id))
    finally:
        client.close()


@dataclass
class SubmittedRun:
    """What a stopped ``flwr run`` left in its folder, for the interruption line.

    Its ServerApp, in another process, recorded it; once that process has
    ended, a summary it left ``running`` or ``failed`` (its grid was cut
    off by the stop) is marked ``interrupted``.
    """

    out_dir: Path
    rows: list[int] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    finished: bool = True

    WAIT_S = 3.0  # for the ServerApp's last write
    KILL_WAIT_S = 1.0  # for it to be gone once killed (a zombie until reaped)

    @classmethod
    def peek(cls, out: Path) -> SubmittedRun:
        """The run in ``out`` as its summary says now (nothing written)."""
        try:
            summary = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            return cls(out)
        return cls._of(out, summary)

    @classmethod
    def _of(cls, out: Path, summary: dict[str, Any]) -> SubmittedRun:
        rounds = int(summary.get("rounds_completed", 0) or 0)
        config = summary.get("config")
        return cls(out, list(range(rounds)), config if isinstance(config, dict) else {})

    @classmethod
    def read(cls, out: Path) -> SubmittedRun:
        """The run in ``out``, its summary marked ``interrupted``."""
        path = out / "summary.json"
        summary = cls._settled_summary(path)
        if summary is None:
            return cls(out)
        if summary.get("status") in ("running", "failed"):
            summary["status"] = "interrupted"
            summary["error"] = "stopped by a signal to the command that submitted it"
            tmp = path.with_name("summary.json.tmp")
            tmp.write_text(json.dumps(summary, indent=2, default=str))
            tmp.replace(path)
        return cls._of(out, summary)

    @classmethod
    def _settled_summary(cls, path: Path) -> dict[str, Any] | None:
        """The summary once its writer has ended.

        A ServerApp on this machine still running :data:`WAIT_S` seconds
        after the stop (a loaded machine) is killed first: its last write,
        ``failed`` for the grid the stop cut off, would otherwise land after
        the ``interrupted`` mark and undo it. Its finished rounds are on
        file already.
        """
        deadline = time.monotonic() + cls.WAIT_S
        killed = False
        while True:
            summary = cls._summary(path)
            pid = summary.get("pid") if summary is not None else None
            here = summary is not None and summary.get("host") == socket.gethostname()
            writing = isinstance(pid, int) and here and pid_alive(pid)
            if not writing or time.monotonic() > deadline + cls.KILL_WAIT_S:
                return cls._summary(path) if killed else summary
            if time.monotonic() > deadline and not killed and isinstance(pid, int):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                killed = True
            time.sleep(0.1)

    @staticmethod
    def _summary(path: Path) -> dict[str, Any] | None:
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def write_summary(self, status: str, error: str | None = None) -> None:
        """Nothing: :meth:`read` has written the summary."""
