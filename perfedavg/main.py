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

from perfedavg.client import ADAPTING, META, initial_model, make_client_app
from perfedavg.dataset import build_client_data
from perfedavg.jiang import heldout_partitions, jiang_main_loop
from perfedavg.models import count_parameters
from perfedavg.settings import PerFedAvgSettings, parse_settings
from perfedavg.strategy import BEFORE, PersonalizedFedAvg
from pflcore.apps import AppPackage
from pflcore.config import ConfigError, absolute_data_root, to_plain
from pflcore.experiment import Experiment, open_recorder, strategy_loop
from pflcore.launch import launch
from pflcore.results import RunRecorder
from pflcore.runtime import ClientData
from pflcore.settings import require
from pflcore.strategy import server_settings


def check_perfedavg(config: dict[str, Any]) -> PerFedAvgSettings:
    """Check the composed config against :class:`perfedavg.settings.PerFedAvgSettings`.

    Raises
    ------
    ConfigError
        On the first setting that cannot work, in one line naming it.
    """
    return parse_settings(config)


def check_batches(config: dict[str, Any], data: ClientData) -> None:
    """Batches drawn without replacement must fit in every client's training split."""
    sizes = data.sizes()["train"]
    smallest = min(sizes)
    who = sizes.index(smallest)
    uses_steps = config["algorithm"] in META or config["local_steps"] > 0
    if uses_steps:
        require(
            config["batch_size"] <= smallest,
            f"batch_size={config['batch_size']} exceeds the {smallest} training "
            f"samples of client {who}; lower batch_size",
        )
    ft = config["finetune"]
    adapts = config["algorithm"] in (*ADAPTING, "jiang")
    if adapts and ft["unit"] == "steps" and ft["amount"] > 0:
        require(
            ft["batch_size"] <= smallest,
            f"finetune.batch_size={ft['batch_size']} exceeds the {smallest} "
            f"training samples of client {who}",
        )


@dataclass(frozen=True)
class Prepared:
    """Everything ``main`` needs, built and checked before Ray starts."""

    config: dict[str, Any]
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
    data = build_client_data(
        config["dataset"], config["partition"], config["num_clients"], config["seed"]
    )
    check_batches(config, data)
    try:
        model = initial_model(config, data)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    initial = (
        ArrayRecord()
        if config["algorithm"] == "local"
        else ArrayRecord(model.state_dict())
    )
    return Prepared(config, data, initial, count_parameters(model))


def build_strategy(config: dict[str, Any], recorder: RunRecorder) -> PersonalizedFedAvg:
    """The server of every one-stage algorithm: the same averaging rule for all.

    Per-FedAvg, FedAvg (+ update) and Local differ only on the client; the
    server averages by the run's ``averaging`` setting whichever runs.
    """
    return PersonalizedFedAvg(
        recorder,
        **server_settings(config),
        server_lr=float(config["server_lr"]),
        server_momentum=float(config["server_momentum"]),
    )


def client_app_for(config: dict[str, Any]) -> ClientApp:
    """Per-FedAvg's ClientApp (every algorithm's) for a resolved configuration."""
    return make_client_app(config)


def build_experiment(
    settings: DictConfig | dict[str, Any], out_dir: str | None = None
) -> Experiment:
    """Load the data, build the model and the server: a run ready to start.

    Raises
    ------
    ConfigError, PartitionError, DatasetNotFoundError, DataFormatError
        On bad input, in one line.
    """
    prepared = prepare(settings)
    config = prepared.config
    algorithm = config["algorithm"]
    extra = (BEFORE,) if algorithm in (*ADAPTING, "jiang") else ()
    recorder = open_recorder(config, out_dir, extra_evals=extra)
    recorder.write_partition(prepared.data.class_counts())
    recorder.set_summary(num_parameters=prepared.num_parameters)
    if algorithm == "jiang":
        recorder.set_summary(heldout_partitions=heldout_partitions(config))
        loop = jiang_main_loop(config, recorder, prepared.initial)
    else:
        strategy = build_strategy(config, recorder)
        loop = strategy_loop(strategy, prepared.initial, config)
    return Experiment(config, recorder, loop, client_app_for(config))


PACKAGE = AppPackage(
    "perfedavg",
    PerFedAvgSettings,
    resolve,
    build_experiment,
    client_app_for,
    prepare,
)


@hydra.main(config_path="../conf", config_name="perfedavg", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one experiment and record it."""
    launch(cfg, PACKAGE)


if __name__ == "__main__":
    main()
