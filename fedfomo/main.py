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

from fedfomo.client import BASELINE_UPDATE, NORMS, make_client_app
from fedfomo.dataset import (
    LATENT_FEATURES,
    PARTITION_KINDS,
    TEST_SPLITS,
    FomoData,
    build_fomo_data,
    distribution_labels,
)
from fedfomo.models import build_model
from fedfomo.strategy import FedFomo
from pflcore.baselines import make_baseline_client_app
from pflcore.config import (
    ConfigError,
    absolute_data_root,
    check_common,
    is_int,
    is_number,
    reject_subset,
    require,
    to_plain,
)
from pflcore.data import DataFormatError, DatasetNotFoundError
from pflcore.experiment import guarded, open_recorder, resumed_config, run_experiment
from pflcore.partition import PartitionError
from pflcore.results import RunRecorder
from pflcore.strategy import PartitionFedAvg

ALGORITHMS = ("fedfomo", "fedavg", "fedavg_ft", "local")
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


def check_fedfomo(config: dict[str, Any]) -> None:
    """FedFomo's settings on top of :func:`pflcore.config.check_common`."""
    check_common(config, ALGORITHMS)
    reject_subset(config, "use partition.pool_fraction")
    decay, floor = config["lr_decay"], config["lr_min"]
    require(
        is_number(decay) and 0 < decay <= 1,
        f"lr_decay must lie in (0, 1], got {decay!r}",
    )
    require(is_number(floor) and floor >= 0, f"lr_min must be >= 0, got {floor!r}")
    fomo = config["fomo"]
    m = fomo["num_candidates"]
    require(
        is_int(m) and 1 <= m <= config["num_clients"],
        f"fomo.num_candidates (M, own model included) must lie in "
        f"1..num_clients={config['num_clients']}, got {m!r}",
    )
    for key in ("epsilon_initial", "epsilon_decay"):
        value = fomo[key]
        require(
            is_number(value) and 0 <= value <= 1,
            f"fomo.{key} must lie in [0, 1], got {value!r}",
        )
    require(
        fomo["norm"] in NORMS,
        f"fomo.norm must be one of {list(NORMS)}, got {fomo['norm']!r}",
    )
    require(
        isinstance(fomo["global_candidate"], bool),
        "fomo.global_candidate must be true or false, got "
        f"{fomo['global_candidate']!r}",
    )
    clusters = fomo["num_clusters"]
    require(
        is_int(clusters) and 0 <= clusters <= config["num_clients"],
        f"fomo.num_clusters must lie in 0..num_clients={config['num_clients']}, "
        f"got {clusters!r}",
    )
    split = config["dataset"].get("test_split", "carve")
    require(
        split in TEST_SPLITS,
        f"dataset.test_split must be one of {list(TEST_SPLITS)}, got {split!r}",
    )
    part = config["partition"]
    require(
        part["kind"] in PARTITION_KINDS,
        f"partition.kind must be one of {list(PARTITION_KINDS)}, got {part['kind']!r}",
    )
    val = part["val_fraction"]
    require(
        is_number(val) and 0 < val < 1,
        "partition.val_fraction must lie in (0, 1) (FedFomo weighs models on it), "
        f"got {val!r}",
    )
    frac = part["pool_fraction"]
    require(
        is_number(frac) and 0 < frac <= 1,
        f"partition.pool_fraction must lie in (0, 1], got {frac!r}",
    )
    if part["kind"] == "pathological":
        s = part["shards_per_client"]
        require(
            is_int(s) and s >= 1,
            f"partition.shards_per_client must be >= 1, got {s!r}",
        )
    else:
        require(
            part["features"] in LATENT_FEATURES,
            f"partition.features must be one of {list(LATENT_FEATURES)}, "
            f"got {part['features']!r}",
        )
        if part["features"] == "trained":
            block = part["embedding"]
            for key in ("epochs", "batch_size", "width"):
                require(
                    is_int(block[key]) and block[key] >= 1,
                    f"partition.embedding.{key} must be a positive integer, "
                    f"got {block[key]!r}",
                )
            require(
                is_number(block["lr"]) and block["lr"] > 0,
                f"partition.embedding.lr must be > 0, got {block['lr']!r}",
            )
        k = part["num_distributions"]
        require(
            is_int(k) and k >= 1 and config["num_clients"] % k == 0,
            "partition.num_distributions must divide "
            f"num_clients={config['num_clients']}, "
            f"got {k!r}",
        )
        require(
            is_int(part["pca_dim"]) and part["pca_dim"] >= 1,
            f"partition.pca_dim must be a positive integer, got {part['pca_dim']!r}",
        )
    size = config["dataset"]["image_size"]
    require(
        is_int(size) and size >= 22,
        f"dataset.image_size must be >= 22 for the paper's CNN, got {size!r}",
    )
    finetune = config["finetune"]
    require(
        is_int(finetune["epochs"]) and finetune["epochs"] >= 0,
        f"finetune.epochs must be an integer >= 0, got {finetune['epochs']!r}",
    )
    require(
        is_number(finetune["lr"]) and finetune["lr"] > 0,
        f"finetune.lr must be > 0, got {finetune['lr']!r}",
    )


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
