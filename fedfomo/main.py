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

from fedfomo.client import BASELINE_UPDATE, make_client_app
from fedfomo.dataset import FomoData, build_fomo_data, distribution_labels
from fedfomo.models import build_model
from fedfomo.settings import FedFomoSettings, parse_settings
from fedfomo.strategy import FedFomo
from pflcore.apps import AppPackage
from pflcore.baselines import make_baseline_client_app
from pflcore.config import absolute_data_root, to_plain
from pflcore.experiment import Experiment, open_recorder, strategy_loop
from pflcore.launch import launch
from pflcore.results import RunRecorder
from pflcore.strategy import PartitionFedAvg, server_settings


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
    data = build_fomo_data(
        config["dataset"], config["partition"], config["num_clients"], config["seed"]
    )
    model = build_model(
        config["seed"],
        data.data.num_classes,
        data.data.channels,
        config["dataset"]["image_size"],
    )
    return Prepared(config, data, ArrayRecord(model.state_dict()))


def client_app_for(config: dict[str, Any]) -> ClientApp:
    """FedFomo's ClientApp, or the shared baseline ClientApp, for ``config``."""
    if config["algorithm"] == "fedfomo":
        return make_client_app(config)
    return make_baseline_client_app(config, BASELINE_UPDATE)


def build_strategy(config: dict[str, Any], recorder: RunRecorder) -> PartitionFedAvg:
    """FedFomo's server, or FedAvg's for the baselines."""
    common = server_settings(config)
    if config["algorithm"] != "fedfomo":
        return PartitionFedAvg(recorder, **common)
    fomo = config["fomo"]
    return FedFomo(
        recorder,
        num_candidates=fomo["num_candidates"],
        epsilon_initial=fomo["epsilon_initial"],
        epsilon_decay=fomo["epsilon_decay"],
        global_candidate=fomo["global_candidate"],
        num_clusters=fomo["num_clusters"],
        **common,
    )


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
    config, data = prepared.config, prepared.data
    recorder = open_recorder(config, out_dir)
    recorder.write_partition(data.class_counts())
    recorder.set_summary(
        num_parameters=sum(int(a.numpy().size) for a in prepared.initial.values()),
        train_samples=[int(t.size) for t in data.train],
        val_samples=[int(v.size) for v in data.val],
        test_samples=[int(t.size) for t in data.test],
        test_split=config["dataset"].get("test_split", "carve"),
        client_distribution=data.distribution,
        **distribution_summary(data),
    )
    # FedFomo's server sends each client chosen models, not one global model
    sends_initial = config["algorithm"] not in ("fedfomo", "local")
    initial = prepared.initial if sends_initial else ArrayRecord()
    loop = strategy_loop(build_strategy(config, recorder), initial, config)
    return Experiment(config, recorder, loop, client_app_for(config))


PACKAGE = AppPackage(
    "fedfomo",
    FedFomoSettings,
    resolve,
    build_experiment,
    client_app_for,
    prepare,
)


@hydra.main(config_path="../conf", config_name="fedfomo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one FedFomo/FedAvg/FedAvg+FT/Local experiment and record it."""
    launch(cfg, PACKAGE)


if __name__ == "__main__":
    main()
