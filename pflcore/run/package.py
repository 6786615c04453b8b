"""The package base class: an algorithm package declares, the base runs it.

A package (``fedper``, ``pfedhn``, ...) subclasses :class:`AlgorithmPackage`
in its ``main.py`` and declares what differs between methods:

* ``name``, ``description`` and ``schema`` (its typed settings class);
* :meth:`~AlgorithmPackage.prepare`: its data, partition and initial model,
  built and checked before Ray starts, as a :class:`Prepared`;
* :meth:`~AlgorithmPackage.main_loop`: its server (usually
  ``strategy_loop(<its strategy>, prepared.initial, prepared.config)``);
* :meth:`~AlgorithmPackage.client_app_for`: its ClientApp;
* optionally :meth:`~AlgorithmPackage.recorder_options` (extra columns and
  evaluations) and :meth:`~AlgorithmPackage.check` (checks beyond the schema).

The base resolves the composed config (checked, data root absolute), opens
the recorder, writes the partition and the package's ``summary.json``
entries, and hands the same :class:`~pflcore.run.experiment.Experiment` to
every engine: the embedded simulation (``python -m <package>.main``, whose
Hydra entry is :meth:`~AlgorithmPackage.hydra_main`), ``flwr run`` and
SuperNodes (:mod:`pflcore.run.apps`).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from pflcore.config import ConfigError, absolute_data_root, to_plain
from pflcore.config.runconfig import from_run_config, to_run_config
from pflcore.config.settings import Group, group_paths, leaf_fields, parse
from pflcore.data.client_data import ClientData
from pflcore.data.images import DataFormatError, DatasetNotFoundError
from pflcore.data.partition import PartitionError
from pflcore.data.shared_partition import partition_digest
from pflcore.records.results import RunRecorder
from pflcore.run.experiment import Experiment, MainLoop, open_recorder

CONF = Path(__file__).resolve().parents[2] / "conf"
# What bad input raises while a run is prepared: one line, no traceback.
PREPARATION_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    PartitionError,
    DatasetNotFoundError,
    DataFormatError,
)


@dataclass(frozen=True)
class Prepared:
    """A run's inputs, built and checked before Ray starts.

    Packages derive from it to keep what their server needs besides these
    (their typed settings, a linear base's form, ...).

    Attributes
    ----------
    config : dict
        The resolved configuration (:meth:`AlgorithmPackage.resolve`).
    data : ClientData
        Every client's splits (its class counts are the run's partition).
    initial : ArrayRecord
        What the server sends in the first round.
    summary : dict
        The package's entries in ``summary.json``.
    """

    config: dict[str, Any]
    data: ClientData
    initial: ArrayRecord
    summary: dict[str, Any] = field(default_factory=dict)


def tuning_view(prepared: Prepared) -> Prepared:
    """``prepared`` with its data's tuning view and the summary saying so.

    Raises
    ------
    ConfigError
        If the package's partition holds out no validation split.
    """
    try:
        data = prepared.data.tuning_view(int(prepared.config["seed"]))
    except ValueError as err:
        raise ConfigError(f"tuning=true cannot work: {err}") from None
    summary = {**prepared.summary, "tuning": "test = held-out half of validation"}
    return replace(prepared, data=data, summary=summary)


class AlgorithmPackage(ABC):
    """One algorithm package, as every engine runs it (see the module docstring)."""

    name: ClassVar[str]
    description: ClassVar[str]
    schema: ClassVar[type[Group]]
    errors: ClassVar[tuple[type[BaseException], ...]] = PREPARATION_ERRORS
    # whether prepare() and the workers build the shared protocol's clients
    # (pflcore.data.shared_partition) when protocol.partition is set
    takes_shared_partition: ClassVar[bool] = False

    # -- what a package declares ------------------------------------------------

    @abstractmethod
    def prepare(self, cfg: DictConfig | dict[str, Any]) -> Prepared:
        """Resolve ``cfg``, load and partition the data, build the initial model."""

    @abstractmethod
    def main_loop(self, prepared: Prepared, recorder: RunRecorder) -> MainLoop:
        """The server's rounds for ``prepared``, recording into ``recorder``."""

    @abstractmethod
    def client_app_for(self, config: dict[str, Any]) -> ClientApp:
        """The package's ClientApp for a resolved configuration."""

    def recorder_options(self, prepared: Prepared) -> dict[str, Any]:
        """Keywords of the run's recorder (``extra_fields``, ``extra_evals``)."""
        return {}

    def check(self, config: dict[str, Any]) -> Group:
        """Check ``config`` against :attr:`schema`; one line on the first bad value.

        Raises
        ------
        ConfigError
            On the first setting that cannot work, naming it.
        """
        return parse(self.schema, config)

    def complete(self, config: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Finish ``config`` in place once checked: dependent defaults, paths."""

    # -- what the base does -----------------------------------------------------

    def resolve(self, cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
        """The checked configuration with absolute paths: what server and clients use.

        Idempotent, so the launcher, the ServerApp and every ClientApp that
        apply it to the same run config agree.
        """
        config = copy.deepcopy(to_plain(cfg) if isinstance(cfg, DictConfig) else cfg)
        self.check(config)
        shared = config.get("protocol", {}).get("partition")
        if shared is not None and not self.takes_shared_partition:
            raise ConfigError(
                f"protocol.partition={shared} is not available in {self.name} yet "
                "(docs/BENCHMARK.md lists the packages that take it)"
            )
        self.complete(config)
        config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
        return config

    def build(
        self, cfg: DictConfig | dict[str, Any], out_dir: str | None = None
    ) -> Experiment:
        """Load the data, build the model and the server: a run ready to start.

        Raises
        ------
        ConfigError, PartitionError, DatasetNotFoundError, DataFormatError
            On bad input, in one line.
        """
        prepared = self.prepare(cfg)
        config = prepared.config
        if config.get("protocol", {}).get("partition") is not None:
            digest = partition_digest(prepared.data)
            prepared = replace(
                prepared, summary={**prepared.summary, "partition_digest": digest}
            )
        if config.get("tuning"):
            prepared = tuning_view(prepared)
        recorder = open_recorder(config, out_dir, **self.recorder_options(prepared))
        recorder.write_partition(prepared.data.class_counts())
        recorder.set_summary(**prepared.summary)
        loop = self.main_loop(prepared, recorder)
        return Experiment(config, recorder, loop, self.client_app_for(config))

    def run_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` as Flower run-config entries, one per schema leaf."""
        return to_run_config(
            config,
            groups=group_paths(self.schema),
            leaves=[path for path, _ in leaf_fields(self.schema)],
        )

    def config_of(self, run_config: dict[str, Any]) -> dict[str, Any]:
        """The resolved configuration a run config describes."""
        return self.resolve(from_run_config(dict(run_config)))

    def hydra_main(self) -> Callable[[], None]:
        """``python -m <package>.main``: compose ``conf/<name>.yaml``, then launch."""
        import hydra

        from pflcore.run.launch import launch

        @hydra.main(config_path=str(CONF), config_name=self.name, version_base="1.3")
        def main(cfg: DictConfig) -> None:
            launch(cfg, self)

        return main

    def __reduce__(self) -> tuple[Any, ...]:
        # a package is a declaration: workers rebuild it from its class
        return (type(self), ())
