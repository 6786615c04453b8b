"""The steps every package's ``main`` shares: run a strategy, record, fail clearly."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from pflcore.results import RunRecorder
from pflcore.simulation import build_server_app, run_federation
from pflcore.strategy import PartitionFedAvg

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


def run_experiment(
    strategy: PartitionFedAvg,
    initial_arrays: ArrayRecord,
    client_app: ClientApp,
    config: dict[str, Any],
) -> None:
    """Run ``strategy`` through the Ray simulation and close the record.

    Rounds are written as they finish; if the run fails, ``summary.json``
    says so, with the error, and the rounds already written stay.

    Parameters
    ----------
    strategy : PartitionFedAvg
        The server strategy (holds the recorder).
    initial_arrays : ArrayRecord
        What the server sends in the first round.
    client_app : ClientApp
        The package's ClientApp.
    config : dict
        Resolved configuration (``num_clients``, ``num_rounds``,
        ``client_resources``, ``timeout_s``, ``verbose``).
    """

    def rounds(grid: Grid, partition_to_node: dict[int, int]) -> None:
        strategy.bind_partitions(partition_to_node)
        strategy.start(
            grid,
            initial_arrays,
            num_rounds=config["num_rounds"],
            timeout=float(config["timeout_s"]),
            evaluate_fn=strategy.end_round,
        )

    run_main_loop(rounds, strategy.recorder, client_app, config)


def run_main_loop(
    main_loop: Callable[[Grid, dict[int, int]], None],
    recorder: RunRecorder,
    client_app: ClientApp,
    config: dict[str, Any],
) -> None:
    """Run a server main loop through the Ray simulation and close the record.

    The general form of :func:`run_experiment`, for algorithms whose server
    runs more than one strategy (e.g. several stages in sequence).

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
    server_app = build_server_app(main_loop, config["num_clients"])
    try:
        run_federation(
            server_app,
            client_app,
            config["num_clients"],
            config["client_resources"],
            verbose=bool(config.get("verbose", False)),
        )
    except BaseException as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            detail += (
                " <- "
                + "".join(traceback.format_exception_only(type(cause), cause)).strip()
            )
        recorder.write_summary(status="failed", error=detail)
        stop_with(
            f"run failed after {len(recorder.rows)} recorded rounds "
            f"(kept in {recorder.out_dir}): {detail}"
        )
    recorder.write_summary(status="completed")
    print(f"results: {recorder.out_dir}", flush=True)
