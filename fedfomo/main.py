"""FedFomo, FedAvg, FedAvg + fine-tuning and Local-only through Flower's Ray simulation.

Run ``python -m fedfomo.main key=value ...`` (see ``conf/fedfomo.yaml``).
Besides the usual run files, a FedFomo run writes ``affinity.csv`` (the
server's affinity matrix P after the latest round), and ``summary.json``
records each client's validation size and, for the latent partition, each
client's distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hydra
from flwr.app import ArrayRecord
from omegaconf import DictConfig

from fedfomo.client import BASELINE_UPDATE, make_client_app
from fedfomo.dataset import FomoData, build_fomo_data, distribution_labels
from fedfomo.models import build_model
from fedfomo.settings import FedFomoSettings, parse_settings
from fedfomo.strategy import FedFomo
from pflcore.baselines import make_baseline_client_app
from pflcore.config import ConfigError, absolute_data_root, to_plain
from pflcore.data import DataFormatError, DatasetNotFoundError
from pflcore.experiment import guarded, open_recorder, resumed_config, run_experiment
from pflcore.partition import PartitionError
from pflcore.results import RunRecorder
from pflcore.strategy import PartitionFedAvg

PREPARATION_ERRORS = (
    ConfigError,
    PartitionError,
    DatasetNotFoundError,
    DataFormatError,
)


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


def prepare(cfg: DictConfig) -> Prepared:
    """Resolve and check the config, load and partition the data, build the model."""
    config = to_plain(cfg)
    check_fedfomo(config)
    config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
    if config["partition"].get("embedding"):
        block = config["partition"]["embedding"]
        block["cache_dir"] = absolute_data_root(block["cache_dir"])
    if config["partition"].get("embedding_path"):
        config["partition"]["embedding_path"] = absolute_data_root(
            config["partition"]["embedding_path"]
        )
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


@hydra.main(config_path="../conf", config_name="fedfomo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one FedFomo/FedAvg/FedAvg+FT/Local experiment and record it."""
    settings = guarded(lambda: resumed_config(cfg), PREPARATION_ERRORS)
    if settings is None:  # the run in this folder is complete
        return
    prepared: Prepared = guarded(lambda: prepare(settings), PREPARATION_ERRORS)
    config, data = prepared.config, prepared.data
    recorder: RunRecorder = guarded(lambda: open_recorder(config), PREPARATION_ERRORS)
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
    common = {
        "num_clients": config["num_clients"],
        "clients_per_round": config["clients_per_round"],
        "num_rounds": config["num_rounds"],
        "eval_every": config["eval_every"],
        "seed": config["seed"],
        "averaging": config["averaging"],
        "on_client_failure": config["on_client_failure"],
    }
    algorithm = config["algorithm"]
    if algorithm == "fedfomo":
        fomo = config["fomo"]
        strategy: PartitionFedAvg = FedFomo(
            recorder,
            num_candidates=fomo["num_candidates"],
            epsilon_initial=fomo["epsilon_initial"],
            epsilon_decay=fomo["epsilon_decay"],
            global_candidate=fomo["global_candidate"],
            num_clusters=fomo["num_clusters"],
            **common,
        )
        run_experiment(strategy, ArrayRecord(), make_client_app(config), config)
        return
    strategy = PartitionFedAvg(recorder, **common)
    initial = ArrayRecord() if algorithm == "local" else prepared.initial
    client_app = make_baseline_client_app(config, BASELINE_UPDATE)
    run_experiment(strategy, initial, client_app, config)


if __name__ == "__main__":
    main()
