"""FedPer, FedAvg and Local-only through Flower's Ray simulation.

Run ``python -m fedper.main key=value ...`` (see ``conf/fedper.yaml``).

Besides the usual entries, ``summary.json`` records ``linear_base`` (the form
of the linear base, or null for the full network) and, for FLICKR-AES,
``client_names`` (the worker id of each partition-id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hydra
from flwr.app import ArrayRecord
from omegaconf import DictConfig

from fedper.client import initial_model, make_client_app
from fedper.dataset import FederatedData, build_federated_data
from fedper.models import MODEL_NAMES, find_linear_base, personal_keys
from fedper.strategy import FedPer
from pflcore.config import (
    ConfigError,
    absolute_data_root,
    check_common,
    is_int,
    to_plain,
)
from pflcore.data import DataFormatError, DatasetNotFoundError
from pflcore.experiment import guarded, open_recorder, resumed_config, run_experiment
from pflcore.partition import PartitionError
from pflcore.results import RunRecorder

ALGORITHMS = ("fedper", "fedavg", "fedavg_ft", "local")
PREPARATION_ERRORS = (
    ConfigError,
    PartitionError,
    DatasetNotFoundError,
    DataFormatError,
)


@dataclass(frozen=True)
class Prepared:
    """Everything ``main`` needs, built and checked before Ray starts."""

    config: dict[str, Any]
    fed: FederatedData
    base: ArrayRecord
    personal: list[str]
    notes: dict[str, Any] = field(default_factory=dict)


def check_fedper(config: dict[str, Any]) -> None:
    """FedPer-specific settings on top of :func:`pflcore.config.check_common`."""
    check_common(config, ALGORITHMS)
    model = config["model"]
    if model["name"] not in MODEL_NAMES:
        raise ConfigError(f"model.name={model['name']!r} is not one of {MODEL_NAMES}")
    if config["algorithm"] == "fedper" and model["num_head_layers"] not in (1, 2, 3, 4):
        raise ConfigError(
            "model.num_head_layers (K_P) must lie in 1..4, "
            f"got {model['num_head_layers']}"
        )
    if model["base_buffers"] not in ("aggregate", "local"):
        raise ConfigError(
            "model.base_buffers must be aggregate or local, "
            f"got {model['base_buffers']!r}"
        )
    if model.get("num_blocks", 13) not in (11, 13):
        raise ConfigError(
            f"model.num_blocks must be 11 or 13, got {model['num_blocks']}"
        )
    finetune = config["finetune"]
    if not (isinstance(finetune["epochs"], int) and finetune["epochs"] >= 0):
        raise ConfigError(f"finetune.epochs must be >= 0, got {finetune['epochs']!r}")
    if not finetune["lr"] > 0:
        raise ConfigError(f"finetune.lr must be > 0, got {finetune['lr']!r}")
    head_epochs = config.get("head_finetune_epochs", 0)
    if not (is_int(head_epochs) and head_epochs >= 0):
        raise ConfigError(
            f"head_finetune_epochs must be an integer >= 0, got {head_epochs!r}"
        )
    if head_epochs > 0 and config["algorithm"] != "fedper":
        raise ConfigError(
            "head_finetune_epochs (paper App. A.3) fine-tunes FedPer's personal "
            f"layers; it needs algorithm=fedper, got {config['algorithm']!r}"
        )
    linear = model.get("linear_base", False)
    if not isinstance(linear, bool):
        raise ConfigError(f"model.linear_base must be true or false, got {linear!r}")
    if linear and model["num_head_layers"] not in (1, 2, 3, 4):
        raise ConfigError(
            "model.linear_base replaces the units below the last "
            "model.num_head_layers (K_P) ones; K_P must lie in 1..4, "
            f"got {model['num_head_layers']}"
        )
    if config["dataset"]["name"] == "flickr":
        check_flickr(config["dataset"])


FLICKR_KEYS = (
    "folder",
    "image_folder",
    "labels_file",
    "min_ratings",
    "max_ratings",
    "min_per_score",
    "test_fraction",
    "image_size",
)


def check_flickr(dataset: dict[str, Any]) -> None:
    """The FLICKR-AES settings (``conf/dataset/flickr.yaml``)."""
    absent = [k for k in FLICKR_KEYS if k not in dataset]
    if absent:
        raise ConfigError(
            f"dataset.name=flickr lacks {absent}: select the group with "
            "dataset=flickr instead of overriding dataset.name"
        )
    low, high = dataset["min_ratings"], dataset["max_ratings"]
    if not (is_int(low) and is_int(high) and 0 <= low < high):
        raise ConfigError(
            "dataset.min_ratings and dataset.max_ratings must be integers with "
            f"0 <= min_ratings < max_ratings, got {low!r} and {high!r}"
        )
    per_score = dataset["min_per_score"]
    if not (is_int(per_score) and per_score >= 0):
        raise ConfigError(f"dataset.min_per_score must be >= 0, got {per_score!r}")
    fraction = dataset["test_fraction"]
    if not (isinstance(fraction, float | int) and 0 < fraction < 1):
        raise ConfigError(f"dataset.test_fraction must lie in (0, 1), got {fraction!r}")
    size = dataset["image_size"]
    if not (is_int(size) and size >= 1):
        raise ConfigError(
            f"dataset.image_size must be a positive integer, got {size!r}"
        )


def _initial(
    config: dict[str, Any], fed: FederatedData
) -> tuple[ArrayRecord, list[str], dict[str, Any] | None]:
    model = initial_model(config, fed.data.num_classes, fed.data.channels)
    personal = personal_keys(
        model,
        config["algorithm"],
        config["model"]["num_head_layers"],
        config["model"]["base_buffers"],
    )
    base = {k: v for k, v in model.state_dict().items() if k not in set(personal)}
    linear = find_linear_base(model)
    return ArrayRecord(base), personal, linear.describe() if linear else None


def prepare(cfg: DictConfig) -> Prepared:
    """Resolve and check the config, load and partition the data, build the model.

    Everything here runs before Ray starts, so bad input stops early.
    """
    config = to_plain(cfg)
    check_fedper(config)
    config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
    fed = build_federated_data(config["dataset"], config["num_clients"], config["seed"])
    base, personal, linear = _initial(config, fed)
    notes: dict[str, Any] = {"linear_base": linear}
    if fed.client_names is not None:
        notes["client_names"] = list(fed.client_names)
    return Prepared(config, fed, base, personal, notes)


@hydra.main(config_path="../conf", config_name="fedper", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one FedPer/FedAvg/Local experiment and record it."""
    settings = guarded(lambda: resumed_config(cfg), PREPARATION_ERRORS)
    if settings is None:  # the run in this folder is complete
        return
    prepared: Prepared = guarded(lambda: prepare(settings), PREPARATION_ERRORS)
    config = prepared.config
    recorder: RunRecorder = guarded(lambda: open_recorder(config), PREPARATION_ERRORS)
    recorder.write_partition(prepared.fed.class_counts())
    recorder.set_summary(
        num_base_tensors=len(prepared.base),
        num_personal_tensors=len(prepared.personal),
        **prepared.notes,
    )
    strategy = FedPer(
        recorder,
        base_keys=list(prepared.base.keys()),
        num_clients=config["num_clients"],
        clients_per_round=config["clients_per_round"],
        num_rounds=config["num_rounds"],
        eval_every=config["eval_every"],
        seed=config["seed"],
        averaging=config["averaging"],
        on_client_failure=config["on_client_failure"],
    )
    run_experiment(strategy, prepared.base, make_client_app(config), config)


if __name__ == "__main__":
    main()
