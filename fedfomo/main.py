"""FedFomo, FedAvg, FedAvg + fine-tuning and Local-only through Flower's Ray simulation.

Run ``python -m fedfomo.main key=value ...`` (see ``conf/fedfomo.yaml``).
Besides the usual run files, a FedFomo run writes ``affinity.csv`` (the
server's affinity matrix P after the latest round), and ``summary.json``
records each client's validation size and, for the latent partition, each
client's distribution.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import hydra
from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from fedfomo.client import baseline_update, make_client_app
from fedfomo.dataset import FomoData, build_fomo_data, distribution_labels
from fedfomo.models import build_model
from fedfomo.settings import FedFomoSettings, Fomo, parse_settings, read_settings
from fedfomo.strategy import FedFomo
from pflcore.config import absolute_data_root, to_plain
from pflcore.fl.baselines import make_baseline_client_app
from pflcore.fl.strategy import PartitionStrategy, server_settings
from pflcore.local.model_check import check_model_input
from pflcore.records.results import RunRecorder
from pflcore.run.apps import AppPackage
from pflcore.run.experiment import Experiment, open_recorder, strategy_loop
from pflcore.run.launch import launch
from pflcore.run.stopping import run_entry


def distribution_summary(data: FomoData) -> dict[str, Any]:
    """The latent distributions' label histograms and TV distances from uniform."""
    histograms, distances = distribution_labels(data)
    if not histograms:
        return {}
    return {
        "distribution_label_counts": histograms,
        "distribution_tv_from_uniform": distances,
    }


def check_fedfomo(config: dict[str, Any]) -> FedFomoSettings:
    """Check the composed config against :class:`fedfomo.settings.FedFomoSettings`.

    Raises
    ------
    ConfigError
        On the first setting that cannot work, in one line naming it.
    """
    return parse_settings(config)


@dataclass(frozen=True)
class Prepared:
    """Everything ``main`` needs, built and checked before Ray starts."""

    config: dict[str, Any]
    settings: FedFomoSettings
    data: FomoData
    initial: ArrayRecord


def resolve(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The checked configuration with absolute paths: what server and clients use.

    Idempotent, so the launcher, the ServerApp and every ClientApp that apply
    it to the same run config agree.
    """
    config = copy.deepcopy(to_plain(cfg) if isinstance(cfg, DictConfig) else cfg)
    check_fedfomo(config)
    config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
    if config["partition"].get("embedding"):
        block = config["partition"]["embedding"]
        block["cache_dir"] = absolute_data_root(block["cache_dir"])
    if config["partition"].get("embedding_path"):
        config["partition"]["embedding_path"] = absolute_data_root(
            config["partition"]["embedding_path"]
        )
    return config


def prepare(cfg: DictConfig | dict[str, Any]) -> Prepared:
    """Resolve and check the config, load and partition the data, build the model."""
    config = resolve(cfg)
    settings = read_settings(config)
    data = build_fomo_data(
        settings.dataset, settings.partition, settings.num_clients, settings.seed
    )
    model = build_model(
        settings.seed,
        data.data.num_classes,
        data.data.channels,
        settings.dataset.image_size,
    )
    size = settings.dataset.image_size
    check_model_input(model, data.data.channels, size, f"dataset.image_size={size}")
    return Prepared(config, settings, data, ArrayRecord(model.state_dict()))


def client_app_for(config: dict[str, Any]) -> ClientApp:
    """FedFomo's ClientApp, or the shared baseline ClientApp, for ``config``."""
    settings = read_settings(config)
    if settings.algorithm == "fedfomo":
        return make_client_app(config)
    return make_baseline_client_app(
        settings.algorithm, baseline_update(settings, config)
    )


def build_strategy(
    recorder: RunRecorder, server: dict[str, Any], algorithm: str, fomo: Fomo
) -> PartitionStrategy:
    """FedFomo's server, or FedAvg's for the baselines.

    Parameters
    ----------
    recorder : RunRecorder
        The run's recorder.
    server : dict
        :class:`pflcore.fl.strategy.PartitionStrategy`'s keywords
        (:func:`pflcore.fl.strategy.server_settings` of the run's config).
    algorithm : str
        The run's ``algorithm``: FedFomo's server for ``fedfomo``.
    fomo : Fomo
        The ``fomo.*`` settings (FedFomo's server only).
    """
    if algorithm != "fedfomo":
        return PartitionStrategy(recorder, **server)
    return FedFomo(
        recorder,
        num_candidates=fomo.num_candidates,
        epsilon_initial=fomo.epsilon_initial,
        epsilon_decay=fomo.epsilon_decay,
        global_candidate=fomo.global_candidate,
        num_clusters=fomo.num_clusters,
        **server,
    )


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
    config, settings, data = prepared.config, prepared.settings, prepared.data
    # FedAvg + FT also tests the global model before fine-tuning: FedAvg's own
    # numbers, from the same training (see baseline_update)
    extra = ("before",) if settings.algorithm == "fedavg_ft" else ()
    recorder = open_recorder(config, out_dir, extra_evals=extra)
    recorder.write_partition(data.class_counts())
    recorder.set_summary(
        num_parameters=sum(int(a.numpy().size) for a in prepared.initial.values()),
        train_samples=[int(t.size) for t in data.train],
        val_samples=[int(v.size) for v in data.val],
        test_samples=[int(t.size) for t in data.test],
        test_split=settings.dataset.test_split,
        client_distribution=data.distribution,
        **distribution_summary(data),
    )
    # FedFomo's server sends each client chosen models, not one global model
    sends_initial = settings.algorithm not in ("fedfomo", "local")
    initial = prepared.initial if sends_initial else ArrayRecord()
    strategy = build_strategy(
        recorder, server_settings(config), settings.algorithm, settings.fomo
    )
    loop = strategy_loop(strategy, initial, config)
    return Experiment(config, recorder, loop, client_app_for(config))


PACKAGE = AppPackage(
    "fedfomo",
    FedFomoSettings,
    resolve,
    build_experiment,
    client_app_for,
    prepare,
    "FedFomo (Zhang et al. 2021), FedAvg (+ FT) and Local-only",
)


@hydra.main(config_path="../conf", config_name="fedfomo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one FedFomo/FedAvg/FedAvg+FT/Local experiment and record it."""
    launch(cfg, PACKAGE)


if __name__ == "__main__":
    run_entry(main)
