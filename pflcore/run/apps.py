"""Module-level ServerApp and ClientApp: a package's run, read from the run config.

Under ``flwr run`` (Flower's managed local simulation, or a SuperLink with
SuperNodes) nothing travels in closures: the ServerApp and the ClientApp are
loaded from ``<package>.app`` in their own processes, and all they know of
the run is ``context.run_config`` (the flattened configuration,
:mod:`pflcore.config.runconfig`) and, on a SuperNode, ``context.node_config``. Both
sides rebuild the configuration from it with the package's ``resolve`` (so
they agree), and the ServerApp builds the same :class:`Experiment` as
``python -m <package>.main`` does for its embedded simulation.

The ServerApp writes into the absolute folder the run config names under
:data:`OUTPUT_DIR_KEY` (``python -m <package>.main launcher=flwr`` sets it
to the Hydra run folder); left empty, it writes under
``~/pfl-runs/<package>/``.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from pflcore.config import ConfigError
from pflcore.data.node_data import DATA_PATH, with_node_data
from pflcore.fl.faults import with_faults
from pflcore.run.experiment import recorded
from pflcore.run.package import AlgorithmPackage
from pflcore.run.simulation import discover_partitions, poll_quickly

OUTPUT_DIR_KEY = "pfl.output-dir"


def output_dir(package: str, run_config: dict[str, Any], run_id: int) -> str:
    """The absolute folder a ServerApp writes its run into.

    Raises
    ------
    ConfigError
        If the run config names a relative folder (it would resolve against
        the SuperLink's working directory, wherever that is).
    """
    given = str(run_config.get(OUTPUT_DIR_KEY, "") or "")
    if given:
        if not Path(given).is_absolute():
            raise ConfigError(
                f"{OUTPUT_DIR_KEY} must be an absolute path, got {given!r}"
            )
        return given
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return str(Path.home() / "pfl-runs" / package / f"{stamp}_{run_id}")


def make_server_app(package: AlgorithmPackage) -> ServerApp:
    """The package's ServerApp: build the run from the run config, then run it.

    The recorder closes itself (:func:`pflcore.run.experiment.recorded`): a run
    that fails leaves ``summary.json`` saying so, with every finished round.
    """
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_config = dict(context.run_config)
        try:
            config = package.config_of(run_config)
            folder = output_dir(package.name, run_config, context.run_id)
            experiment = package.build(config, config.get("resume") or folder)
        except package.errors as exc:  # one line in the SuperLink's log
            raise ConfigError(f"{package.name}: {exc}") from None
        poll_quickly(grid)
        num_clients = int(experiment.config["num_clients"])
        timeout = float(experiment.config["timeout_s"])

        def rounds(grid: Grid, _: dict[int, int]) -> None:
            experiment.main_loop(grid, discover_partitions(grid, num_clients, timeout))

        recorded(rounds, experiment.recorder)(grid, {})
        print(f"results: {experiment.recorder.out_dir}", flush=True)

    return app


class RunConfigClientApp(ClientApp):
    """The package's ClientApp for whatever run config a message's context holds.

    One module-level object serves every run a SuperNode takes part in: the
    ClientApp for a run config is built on its first message (with the
    run's fault injection, as the embedded engine applies it) and kept for
    the next ones. A node whose node config names a partition file
    (``data-path``) trains on that file alone (:mod:`pflcore.data.node_data`).
    """

    def __init__(self, package: AlgorithmPackage) -> None:
        super().__init__()
        self.package = package
        self._for_run = lru_cache(maxsize=2)(self._build)

    def __getstate__(self) -> dict[str, Any]:
        # The engine pickles the app to its workers; the built apps stay behind.
        return {"package": self.package}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["package"])  # type: ignore[misc]

    def _build(self, run_config_json: str, data_path: str | None) -> ClientApp:
        run_config = json.loads(run_config_json)
        node_config = {} if data_path is None else {DATA_PATH: data_path}
        config = with_node_data(
            self.package.config_of(run_config), node_config, run_config
        )
        # The thread count a simulated client gets from its Ray share (Ray sets
        # OMP_NUM_THREADS=num_cpus), also on a SuperNode, whose process would
        # otherwise take every core: float sums then run in the same order, so a
        # deployed run reproduces the simulation bit for bit.
        torch.set_num_threads(max(1, int(config["client_resources"]["num_cpus"])))
        return with_faults(self.package.client_app_for(config), config)

    def __call__(self, message: Message, context: Context) -> Message:
        """Answer ``message`` with the ClientApp of the context's run config."""
        data_path = context.node_config.get(DATA_PATH)
        app = self._for_run(
            json.dumps(dict(context.run_config), sort_keys=True),
            None if data_path is None else str(data_path),
        )
        return app(message, context)
