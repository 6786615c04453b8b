"""FedPer, FedAvg and Local-only through Flower's Ray simulation.

Run ``python -m fedper.main key=value ...`` (see ``conf/fedper.yaml``).

Besides the usual entries, ``summary.json`` records ``linear_base`` (the form
of the linear base, or null for the full network) and, for FLICKR-AES,
``client_names`` (the worker id of each partition-id).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import hydra
from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from fedper.client import initial_model, make_client_app
from fedper.dataset import FederatedData, build_federated_data
from fedper.models import find_linear_base, personal_keys
from fedper.settings import FedPerModel, FedPerSettings, parse_settings, read_settings
from fedper.strategy import FedPer
from pflcore.config import absolute_data_root, to_plain
from pflcore.fl.strategy import server_settings
from pflcore.local.model_check import check_model_input
from pflcore.run.apps import AppPackage
from pflcore.run.experiment import Experiment, open_recorder, strategy_loop
from pflcore.run.launch import launch
from pflcore.run.stopping import run_entry


@dataclass(frozen=True)
class Prepared:
    """Everything ``main`` needs, built and checked before Ray starts."""

    config: dict[str, Any]
    fed: FederatedData
    base: ArrayRecord
    personal: list[str]
    notes: dict[str, Any] = field(default_factory=dict)


def check_fedper(config: dict[str, Any]) -> FedPerSettings:
    """Check the composed config against :class:`fedper.settings.FedPerSettings`.

    Raises
    ------
    ConfigError
        On the first setting that cannot work, in one line naming it.
    """
    return parse_settings(config)


def _initial(
    model_settings: FedPerModel,
    algorithm: str,
    fed: FederatedData,
    *,
    seed: int,
    image_size: int,
) -> tuple[ArrayRecord, list[str], dict[str, Any] | None]:
    """The initial base, the personal keys and the linear base's form (or None).

    ``model_settings`` is the ``model`` group; ``seed`` and ``image_size`` are as
    for :func:`fedper.client.initial_model`.
    """
    model = initial_model(
        model_settings,
        fed.data.num_classes,
        fed.data.channels,
        seed=seed,
        image_size=image_size,
    )
    check_model_input(
        model,
        fed.data.channels,
        image_size,
        f"model.name={model_settings.name} with dataset.image_size={image_size}",
    )
    personal = personal_keys(
        model,
        algorithm,
        model_settings.num_head_layers,
        model_settings.base_buffers,
    )
    base = {k: v for k, v in model.state_dict().items() if k not in set(personal)}
    linear = find_linear_base(model)
    return ArrayRecord(base), personal, linear.describe() if linear else None


def resolve(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The checked configuration with absolute paths: what server and clients use.

    Idempotent, so the launcher, the ServerApp and every ClientApp that apply
    it to the same run config agree.
    """
    config = copy.deepcopy(to_plain(cfg) if isinstance(cfg, DictConfig) else cfg)
    check_fedper(config)
    config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
    return config


def prepare(cfg: DictConfig | dict[str, Any]) -> Prepared:
    """Resolve and check the config, load and partition the data, build the model.

    Everything here runs before Ray starts, so bad input stops early.
    """
    config = resolve(cfg)
    settings = read_settings(config)
    fed = build_federated_data(settings.dataset, settings.num_clients, settings.seed)
    base, personal, linear = _initial(
        settings.model,
        settings.algorithm,
        fed,
        seed=settings.seed,
        image_size=settings.dataset.image_size,
    )
    notes: dict[str, Any] = {"linear_base": linear}
    if fed.client_names is not None:
        notes["client_names"] = list(fed.client_names)
    return Prepared(config, fed, base, personal, notes)


def client_app_for(config: dict[str, Any]) -> ClientApp:
    """FedPer's ClientApp for a resolved configuration."""
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
    recorder = open_recorder(config, out_dir)
    recorder.write_partition(prepared.fed.class_counts())
    recorder.set_summary(
        num_base_tensors=len(prepared.base),
        num_personal_tensors=len(prepared.personal),
        **prepared.notes,
    )
    strategy = FedPer(
        recorder,
        base_keys=list(prepared.base.keys()),
        **server_settings(config),
    )
    loop = strategy_loop(strategy, prepared.base, config)
    return Experiment(config, recorder, loop, client_app_for(config))


PACKAGE = AppPackage(
    "fedper",
    FedPerSettings,
    resolve,
    build_experiment,
    client_app_for,
    prepare,
    "FedPer (Arivazhagan et al. 2019), FedAvg and Local-only",
)


@hydra.main(config_path="../conf", config_name="fedper", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one FedPer/FedAvg/Local experiment and record it."""
    launch(cfg, PACKAGE)


if __name__ == "__main__":
    run_entry(main)
