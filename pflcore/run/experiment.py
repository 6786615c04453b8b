"""The steps every package's ``main`` shares: run a strategy, record, fail clearly."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from omegaconf import DictConfig, OmegaConf

from pflcore.config import ConfigError, flatten, to_plain
from pflcore.data.digests import DATA_ROOT
from pflcore.fl.client_state import (
    arrays_to_plain,
    fetch_client_states,
    plain_to_arrays,
    restore_client_states,
)
from pflcore.fl.faults import with_faults
from pflcore.fl.strategy import PartitionStrategy
from pflcore.records.provenance import LOCAL_PATH
from pflcore.records.results import RunRecorder, effective_status
from pflcore.run.checkpoint import (
    CHECKPOINT_FILE,
    RESUMABLE_KEYS,
    check_resumable,
    read_checkpoint,
    write_checkpoint,
)
from pflcore.run.output_check import unwritable_reason
from pflcore.run.simulation import build_server_app, run_federation
from pflcore.run.stopping import (
    StopSignal,
    forget,
    note_checkpoint,
    raise_if_stopped,
    received_signal,
    resume_command,
    signal_of,
    watch,
)

log = logging.getLogger(__name__)


def stop_with(message: str) -> NoReturn:
    """Print a one-line error and exit with status 2 (no traceback)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def guarded(step: Callable[[], Any], errors: tuple[type[BaseException], ...]) -> Any:
    """Run a preparation step, turning the listed errors into a clean exit."""
    try:
        return step()
    except errors as exc:
        stop_with(str(exc))


def hydra_output_dir() -> str:
    """The current Hydra run's output folder (cwd outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return os.getcwd()


MainLoop = Callable[[Grid, dict[int, int]], None]
"""``main_loop(grid, partition_to_node)``: a run's server rounds."""


@dataclass(frozen=True)
class Experiment:
    """One run, ready for any engine: what the server runs and what clients run.

    Built the same way whether the embedded simulation (:func:`run_embedded`)
    or a module-level ServerApp under ``flwr run`` (:mod:`pflcore.run.apps`) runs it.

    Attributes
    ----------
    config : dict
        The resolved, checked configuration.
    recorder : RunRecorder
        Where the rounds are written.
    main_loop : MainLoop
        The server's rounds.
    client_app : ClientApp
        The package's ClientApp for ``config`` (without fault injection).
    """

    config: dict[str, Any]
    recorder: RunRecorder
    main_loop: MainLoop
    client_app: ClientApp


def strategy_loop(
    strategy: PartitionStrategy, initial_arrays: ArrayRecord, config: dict[str, Any]
) -> MainLoop:
    """The server rounds of ``strategy``: resumed, checkpointed, recorded by round.

    Parameters
    ----------
    strategy : PartitionStrategy
        The server strategy (holds the recorder).
    initial_arrays : ArrayRecord
        What the server sends in the first round.
    config : dict
        Resolved configuration (``num_rounds``, ``timeout_s``,
        ``checkpoint_every``).
    """
    timeout = float(config["timeout_s"])
    recorder = strategy.recorder

    def rounds(grid: Grid, partition_to_node: dict[int, int]) -> None:
        strategy.bind_partitions(partition_to_node)
        first, arrays = 1, initial_arrays
        resumed = recorder.resumed_from
        if resumed is not None:
            first, arrays = (
                int(resumed["round"]) + 1,
                resume_strategy(strategy, grid, resumed, timeout),
            )
        checkpoints = Checkpointer(config, recorder, config["num_rounds"])
        strategy.start(
            grid,
            arrays,
            timeout=timeout,
            first_round=first,
            before_round=raise_if_stopped,
            after_round=lambda r, a: checkpoints.after_round(
                r, a, strategy, grid, timeout
            ),
        )

    return rounds


def run_embedded(experiment: Experiment) -> None:
    """Run ``experiment`` on the embedded Ray simulation and close its record."""
    run_main_loop(
        experiment.main_loop,
        experiment.recorder,
        experiment.client_app,
        experiment.config,
    )


class Checkpointer:
    """Writes a checkpoint every ``checkpoint_every`` rounds and after the last.

    Parameters
    ----------
    config : dict
        The run's configuration (``checkpoint_every``; 0 writes none).
    recorder : RunRecorder
        The run's recorder (its folder receives the checkpoint).
    last_round : int
        The run's last round (always checkpointed when checkpoints are on).
    """

    def __init__(
        self, config: dict[str, Any], recorder: RunRecorder, last_round: int
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.every = int(config.get("checkpoint_every", 0))
        self.last_round = last_round

    def due(self, server_round: int) -> bool:
        """Whether a checkpoint is written after ``server_round``."""
        if self.every <= 0:
            return False
        return server_round % self.every == 0 or server_round == self.last_round

    def after_round(
        self,
        server_round: int,
        arrays: ArrayRecord,
        strategy: PartitionStrategy,
        grid: Grid,
        timeout: float,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Write the checkpoint of ``server_round`` if one is due."""
        if not self.due(server_round):
            return
        kill_after = (self.config.get("inject") or {}).get("kill_after_round")
        write_checkpoint(
            self.recorder.out_dir,
            {
                "round": server_round,
                "config": self.recorder.config,
                "arrays": arrays_to_plain(arrays),
                "server": strategy.checkpoint_state(),
                "recorder": self.recorder.checkpoint_state(),
                "clients": fetch_client_states(
                    grid, strategy.node_of, timeout, server_round
                ),
                **(extra or {}),
            },
        )
        note_checkpoint(server_round)
        if kill_after is not None and server_round == int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)  # a crash right after a checkpoint


def resume_strategy(
    strategy: PartitionStrategy,
    grid: Grid,
    checkpoint: dict[str, Any],
    timeout: float,
) -> ArrayRecord:
    """Put the server and the clients back where ``checkpoint`` left them.

    Returns the global arrays to continue from.
    """
    strategy.restore_state(checkpoint["server"])
    restore_client_states(grid, strategy.node_of, checkpoint["clients"], timeout)
    return plain_to_arrays(checkpoint["arrays"])


def _command_line_overrides() -> dict[str, str]:
    """``key=value`` overrides the user typed for this run (Hydra's task list)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        task = list(HydraConfig.get().overrides.task)
    except ValueError:  # outside a Hydra run
        return {}
    pairs = (item.lstrip("+~").split("=", 1) for item in task if "=" in item)
    return {key: value for key, value in pairs}


def _typed_difference(saved: dict[str, Any], cfg: DictConfig) -> str | None:
    """The first typed setting on which ``cfg`` differs from a saved run's, or None."""
    before, after = flatten(saved), flatten(to_plain(cfg))
    for key in _command_line_overrides():
        if key.split(".")[0] in RESUMABLE_KEYS or key not in after:
            continue
        if str(before.get(key)).startswith((DATA_ROOT, LOCAL_PATH)):
            continue  # a location, recorded without this machine's path
        if before.get(key, "<absent>") != after[key]:
            return f"{key}={before.get(key, '<absent>')!r} there, {after[key]!r} now"
    return None


def continue_in_place(cfg: DictConfig) -> DictConfig | None:
    """The same command into a folder that already holds its run: finish it.

    When the run folder (e.g. a fixed ``hydra.run.dir`` or a sweep's job
    folder) holds a run of the same settings, a completed run is left as it
    is (None: nothing to do) and an interrupted or failed one with a
    checkpoint is resumed; a run of other settings is refused in one line
    (it would be overwritten). This is how re-running an interrupted sweep
    picks up where it stopped.

    Raises
    ------
    ConfigError
        If the folder holds a run of other settings, or one still running.
    """
    folder = Path(hydra_output_dir())
    path = folder / "summary.json"
    if not path.is_file():
        return cfg
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return cfg
    if not isinstance(summary.get("config"), dict):
        return cfg
    difference = _typed_difference(summary["config"], cfg)
    if difference is not None:
        # e.g. a seed sweep whose hydra.sweep.subdir leaves out the seed: each
        # job would overwrite the last one's records
        raise ConfigError(
            f"{folder} already holds a run with other settings ({difference}); "
            "delete it, or give each run its own folder (hydra.run.dir, or a "
            "hydra.sweep.subdir naming every swept key)"
        )
    status = effective_status(summary)
    if status == "completed":
        print(f"already complete: {folder} (delete it to run again)", flush=True)
        return None
    if status == "running":
        raise ConfigError(
            f"{folder} is being written by process {summary.get('pid')}; "
            "wait for it or choose another hydra.run.dir"
        )
    if (folder / CHECKPOINT_FILE).is_file():
        resumed = cfg.copy()
        resumed.resume = str(folder)
        return resumed
    return cfg


def resumed_config(cfg: DictConfig) -> DictConfig | None:
    """The settings to run with: a resumed run's own, or ``cfg``.

    ``python -m <pkg>.main resume=FOLDER`` continues the run with the
    settings it started with; only settings that cannot change the result
    (:data:`pflcore.run.checkpoint.RESUMABLE_KEYS`) are taken from this command.
    Any other setting typed on the command line must equal the run's.
    Without ``resume``, :func:`continue_in_place` decides. None: nothing to
    run (the run is complete).
    """
    folder = cfg.get("resume")
    if not folder:
        in_place = continue_in_place(cfg)
        if in_place is None or not in_place.get("resume"):
            return in_place
        cfg, folder = in_place, in_place.resume
    checkpoint = read_checkpoint(str(folder))
    saved = dict(checkpoint["config"])
    current = to_plain(cfg)
    for key in RESUMABLE_KEYS:
        if key in current:
            saved[key] = current[key]
    before, after = flatten(saved), flatten(current)
    for key in sorted(_command_line_overrides()):
        if key.split(".")[0] in RESUMABLE_KEYS or key not in after:
            continue
        if before.get(key, "<absent>") != after[key]:
            raise ConfigError(
                f"resume={folder}: cannot resume with a changed setting: {key} "
                f"(the run used {before.get(key, '<absent>')!r}, now {after[key]!r})"
            )
    return OmegaConf.create(saved)


def open_recorder(
    config: dict[str, Any], out_dir: str | None = None, **kwargs: Any
) -> RunRecorder:
    """The run's recorder: a new run folder, or the resumed run's folder.

    A new run is written into ``out_dir``, or Hydra's run folder when it is
    None.

    With ``resume=<run folder>`` the folder's checkpoint is read and checked
    against this config (a setting that would change the result is refused
    in one line), and the records are cut back to the checkpoint's round,
    all before Ray starts.
    """
    if config.get("on_client_failure") == "tolerate":
        fields = tuple(kwargs.pop("extra_fields", ()))
        kwargs["extra_fields"] = (*fields, "failed_clients", "failed_partitions")
    folder = config.get("resume")
    if not folder:
        target = out_dir or hydra_output_dir()
        refuse_unwritable(f"run folder {target}", target)
        recorder = RunRecorder(target, config, **kwargs)
        watch(recorder)
        return recorder
    folder = str(Path(folder).expanduser().resolve())
    refuse_unwritable(f"resume={folder}", folder)
    config["resume"] = folder
    checkpoint = read_checkpoint(folder)
    check_resumable(config, checkpoint)
    recorder = RunRecorder(folder, config, resuming=True, **kwargs)
    recorder.restore(checkpoint["recorder"])
    recorder.resumed_from = checkpoint
    watch(recorder)
    print(
        f"resuming {folder} after round {checkpoint['round']}",
        file=sys.stderr,
        flush=True,
    )
    return recorder


def refuse_unwritable(name: str, folder: str | Path) -> None:
    """Raise one :class:`ConfigError` line if ``folder`` cannot be written.

    ``name`` says what the folder is ("run folder /x", "resume=/x"); the
    reason is :func:`pflcore.run.output_check.unwritable_reason`'s.
    """
    reason = unwritable_reason(folder)
    if reason is not None:
        raise ConfigError(f"{name} cannot be written: {reason}")


def stopped_by_signal(exc: BaseException) -> bool:
    """Whether ``exc`` is how a run ends when SIGINT or SIGTERM stops it.

    :mod:`pflcore.run.stopping` raises :class:`~pflcore.run.stopping.RunStopped` in
    the server's thread and :class:`~pflcore.run.stopping.StopSignal` in the
    main thread; ``KeyboardInterrupt`` and Ray's ``SystemExit(15)`` count
    too (:func:`pflcore.run.stopping.signal_of`). Such a run did not fail: its
    rounds and its last checkpoint are intact, and the same command resumes
    it.
    """
    return signal_of(exc) is not None


def run_main_loop(
    main_loop: MainLoop,
    recorder: RunRecorder,
    client_app: ClientApp,
    config: dict[str, Any],
) -> None:
    """Run a server main loop through the Ray simulation and close the record.

    What :func:`run_embedded` runs: any server loop, whether one strategy's
    (:func:`strategy_loop`) or several stages in sequence.

    Parameters
    ----------
    main_loop : callable
        ``main_loop(grid, partition_to_node)``: the server's rounds.
    recorder : RunRecorder
        The run's recorder (its summary records success or the failure).
    client_app : ClientApp
        The package's ClientApp.
    config : dict
        Resolved configuration (``num_clients``, ``client_resources``,
        ``verbose``).
    """
    server_app = build_server_app(recorded(main_loop, recorder), config["num_clients"])
    client_app = with_faults(client_app, config)
    watch(recorder)
    try:
        run_federation(
            server_app,
            client_app,
            config["num_clients"],
            config["client_resources"],
            verbose=bool(config.get("verbose", False)),
            ray_address=config.get("ray_address"),
        )
    except BaseException as exc:
        detail = describe(exc)
        signum = stop_signal_of(exc)
        if signum is not None:  # not a failure: the run stops, resumable
            if not recorder.finished:
                recorder.write_summary(status="interrupted", error=detail)
            raise StopSignal(signum) from None
        forget(recorder)
        if not recorder.finished:  # it failed before or outside the ServerApp
            recorder.write_summary(status="failed", error=detail)
        stop_with(
            f"run failed after {len(recorder.rows)} recorded rounds "
            f"(kept in {recorder.out_dir}): {detail}"
        )
    forget(recorder)
    if not recorder.finished:
        recorder.write_summary(status="completed")
    print(f"results: {recorder.out_dir}", flush=True)


def stop_signal_of(exc: BaseException) -> int | None:
    """The signal that ended a federation, or None if ``exc`` is an error.

    Once a signal has come, whatever the engine raises while it stops (an
    actor that is gone, ``RuntimeError: Simulation Runtime crashed``) is
    that stop, not a failure.
    """
    received = received_signal()
    return received if received is not None else signal_of(exc)


def command_resuming(folder: str | Path) -> str:
    """The command that finishes this run (or sweep) in ``folder``.

    A single run: this command with ``hydra.run.dir=<folder>``; a sweep: with
    ``hydra.sweep.dir=<its folder>`` (see
    :func:`pflcore.run.stopping.resume_command`).
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
    except ValueError:  # outside a Hydra run
        return resume_command("hydra.run.dir", folder)
    if hydra.mode != RunMode.MULTIRUN:
        return resume_command("hydra.run.dir", folder)
    job = Path(str(hydra.runtime.output_dir)).resolve()
    depth = len(Path(str(hydra.sweep.subdir)).parts)
    return resume_command("hydra.sweep.dir", job.parents[depth - 1] if depth else job)


def describe(exc: BaseException) -> str:
    """One line: the exception and, if any, the one it came from."""
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        detail += (
            " <- "
            + "".join(traceback.format_exception_only(type(cause), cause)).strip()
        )
    return detail


def recorded(main_loop: MainLoop, recorder: RunRecorder) -> MainLoop:
    """``main_loop`` that closes ``recorder`` itself: the ServerApp owns its record.

    When the rounds end, ``summary.json`` says ``completed``; when they raise,
    it says ``failed`` (``interrupted`` for a stopping signal) with the error,
    the rounds already written stay, and the exception goes on. So the record
    is right wherever the ServerApp runs, not only under the embedded engine.
    """

    def loop(grid: Grid, partition_to_node: dict[int, int]) -> None:
        try:
            main_loop(grid, partition_to_node)
        except BaseException as exc:
            status = "interrupted" if stopped_by_signal(exc) else "failed"
            recorder.write_summary(status=status, error=describe(exc))
            raise
        recorder.write_summary(status="completed")

    return loop
