"""Per-FedAvg FO/HF, FedAvg (+ update), Local-only and the Jiang et al. pipeline.

Run ``python -m perfedavg.main key=value ...`` (see ``conf/perfedavg.yaml``).
Every setting is checked, and the data loaded and partitioned, before Ray
starts: an impossible setting stops with one clear line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import hydra
from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from perfedavg.client import initial_model, make_client_app
from perfedavg.dataset import build_client_data
from perfedavg.jiang import heldout_partitions, jiang_main_loop, last_round
from perfedavg.models import count_parameters
from perfedavg.settings import (
    ADAPTING,
    META,
    PerFedAvgSettings,
    parse_settings,
    read_settings,
)
from perfedavg.strategy import BEFORE, PersonalizedFedAvg
from pflcore.config import ConfigError, absolute_data_root, to_plain
from pflcore.config.settings import require
from pflcore.data.client_data import ClientData
from pflcore.fl.strategy import server_settings
from pflcore.local.model_check import check_model_input
from pflcore.records.results import RunRecorder
from pflcore.run.apps import AppPackage
from pflcore.run.experiment import (
    Checkpointer,
    Experiment,
    open_recorder,
    strategy_loop,
)
from pflcore.run.launch import launch
from pflcore.run.stopping import run_entry


def check_perfedavg(config: dict[str, Any]) -> PerFedAvgSettings:
    """Check the composed config against :class:`perfedavg.settings.PerFedAvgSettings`.

    Raises
    ------
    ConfigError
        On the first setting that cannot work, in one line naming it.
    """
    return parse_settings(config)


def check_batches(settings: PerFedAvgSettings, data: ClientData) -> None:
    """Batches drawn without replacement must fit in every client's training split."""
    sizes = data.sizes()["train"]
    smallest = min(sizes)
    who = sizes.index(smallest)
    uses_steps = settings.algorithm in META or settings.local_steps > 0
    if uses_steps:
        require(
            settings.batch_size <= smallest,
            f"batch_size={settings.batch_size} exceeds the {smallest} training "
            f"samples of client {who}; lower batch_size",
        )
    ft = settings.finetune
    adapts = settings.algorithm in (*ADAPTING, "jiang")
    if adapts and ft.unit == "steps" and ft.amount > 0:
        require(
            ft.batch_size <= smallest,
            f"finetune.batch_size={ft.batch_size} exceeds the {smallest} "
            f"training samples of client {who}",
        )


@dataclass(frozen=True)
class Prepared:
    """Everything ``main`` needs, built and checked before Ray starts."""

    config: dict[str, Any]
    settings: PerFedAvgSettings
    data: ClientData
    initial: ArrayRecord
    num_parameters: int


def resolve(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The checked configuration with absolute paths: what server and clients use.

    Idempotent, so the launcher, the ServerApp and every ClientApp that apply
    it to the same run config agree.
    """
    config = copy.deepcopy(to_plain(cfg) if isinstance(cfg, DictConfig) else cfg)
    check_perfedavg(config)
    config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
    return config


def prepare(cfg: DictConfig | dict[str, Any]) -> Prepared:
    """Resolve and check the config, load and partition the data, build the model."""
    config = resolve(cfg)
    settings = read_settings(config)
    data = build_client_data(
        settings.dataset, settings.partition, settings.num_clients, settings.seed
    )
    check_batches(settings, data)
    try:
        model = initial_model(
            settings.model,
            data,
            image_size=settings.dataset.image_size,
            seed=settings.seed,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    size = settings.dataset.image_size
    check_model_input(
        model,
        data.data.channels,
        size,
        f"model.name={settings.model.name} with dataset.image_size={size}",
    )
    initial = (
        ArrayRecord()
        if settings.algorithm == "local"
        else ArrayRecord(model.state_dict())
    )
    return Prepared(config, settings, data, initial, count_parameters(model))


def build_strategy(
    recorder: RunRecorder,
    server: dict[str, Any],
    *,
    server_lr: float,
    server_momentum: float,
) -> PersonalizedFedAvg:
    """The server of every one-stage algorithm: the same averaging rule for all.

    Per-FedAvg, FedAvg (+ update) and Local differ only on the client; the
    server averages by the run's ``averaging`` setting whichever runs.

    Parameters
    ----------
    recorder : RunRecorder
        The run's recorder.
    server : dict
        :class:`pflcore.fl.strategy.PartitionStrategy`'s keywords
        (:func:`pflcore.fl.strategy.server_settings` of the run's config).
    server_lr, server_momentum : float
        The server's step along the averaged update and its momentum.
    """
    return PersonalizedFedAvg(
        recorder,
        **server,
        server_lr=float(server_lr),
        server_momentum=float(server_momentum),
    )


def client_app_for(config: dict[str, Any]) -> ClientApp:
    """Per-FedAvg's ClientApp (every algorithm's) for a resolved configuration."""
    return make_client_app(config)


def build_experiment(
    cfg: DictConfig | dict[str, Any], out_dir: str | None = None
) -> Experiment:
    """Load the data, build the model and the server: a run ready to start.

    Raises
    ------
    ConfigError, PartitionError, DatasetNotFoundError, DataFormatError
        On bad input, in one line.
    """
    prepared = prepare(cfg)
    config, settings = prepared.config, prepared.settings
    algorithm = settings.algorithm
    extra = (BEFORE,) if algorithm in (*ADAPTING, "jiang") else ()
    recorder = open_recorder(config, out_dir, extra_evals=extra)
    recorder.write_partition(prepared.data.class_counts())
    recorder.set_summary(num_parameters=prepared.num_parameters)
    server = server_settings(config)
    if algorithm == "jiang":
        jiang = settings.jiang
        recorder.set_summary(
            heldout_partitions=heldout_partitions(
                settings.num_clients, jiang.holdout_clients
            )
        )
        checkpoints = Checkpointer(
            config, recorder, last_round(settings.num_rounds, jiang.reptile.rounds)
        )
        loop = jiang_main_loop(
            recorder,
            prepared.initial,
            checkpoints,
            server=server,
            jiang=jiang,
            server_lr=settings.server_lr,
            server_momentum=settings.server_momentum,
            timeout=float(settings.timeout_s),
        )
    else:
        strategy = build_strategy(
            recorder,
            server,
            server_lr=settings.server_lr,
            server_momentum=settings.server_momentum,
        )
        loop = strategy_loop(strategy, prepared.initial, config)
    return Experiment(config, recorder, loop, client_app_for(config))


PACKAGE = AppPackage(
    "perfedavg",
    PerFedAvgSettings,
    resolve,
    build_experiment,
    client_app_for,
    prepare,
    "Per-FedAvg FO/HF (Fallah et al. 2020), FedAvg (+ update), Local",
)


@hydra.main(config_path="../conf", config_name="perfedavg", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one experiment and record it."""
    launch(cfg, PACKAGE)


if __name__ == "__main__":
    run_entry(main)
