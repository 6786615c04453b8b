"""Per-FedAvg FO/HF, FedAvg (+ update), Local-only and the Jiang et al. pipeline.

Run ``python -m perfedavg.main key=value ...`` (see ``conf/perfedavg.yaml``).
Every setting is checked, and the data loaded and partitioned, before Ray
starts: an impossible setting stops with one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hydra
from flwr.app import ArrayRecord
from omegaconf import DictConfig

from perfedavg.client import ADAPTING, META, initial_model, make_client_app
from perfedavg.dataset import PARTITIONS, build_client_data
from perfedavg.emnist import EMNIST_CLASSES, ORIENTATIONS
from perfedavg.jiang import REPTILE_OPTIMIZERS, heldout_partitions, jiang_main_loop
from perfedavg.models import MODEL_NAMES, count_parameters
from perfedavg.strategy import BEFORE, PersonalizedFedAvg
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
from pflcore.experiment import (
    guarded,
    open_recorder,
    resumed_config,
    run_experiment,
    run_main_loop,
)
from pflcore.finetune import FINETUNE_UNITS
from pflcore.partition import PartitionError
from pflcore.results import RunRecorder
from pflcore.runtime import ClientData

ALGORITHMS = ("perfedavg_fo", "perfedavg_hf", "fedavg", "fedavg_ft", "local", "jiang")
PREPARATION_ERRORS = (
    ConfigError,
    PartitionError,
    DatasetNotFoundError,
    DataFormatError,
)


def _positive(config: dict[str, Any], key: str, label: str | None = None) -> None:
    value = config[key]
    require(
        is_number(value) and value > 0, f"{label or key} must be > 0, got {value!r}"
    )


def check_perfedavg(config: dict[str, Any]) -> None:
    """Package settings on top of :func:`pflcore.config.check_common`.

    Raises
    ------
    ConfigError
        On the first setting that cannot work.
    """
    check_common(config, ALGORITHMS)
    reject_subset(config, "client sizes follow partition.* (a, samples_per_client)")
    for key in ("alpha", "beta", "delta", "server_lr"):
        _positive(config, key)
    normalize = config["dataset"].get("normalize", True)
    require(
        isinstance(normalize, bool),
        f"dataset.normalize must be true or false, got {normalize!r}",
    )
    steps = config["local_steps"]
    require(is_int(steps) and steps >= 0, f"local_steps must be >= 0, got {steps!r}")
    require(
        config["algorithm"] not in META or steps >= 1,
        f"{config['algorithm']} takes local_steps (tau) meta-steps per round; "
        "local_steps must be >= 1",
    )
    momentum = config["server_momentum"]
    require(
        is_number(momentum) and 0 <= momentum < 1,
        f"server_momentum must lie in [0, 1), got {momentum!r}",
    )
    ft = config["finetune"]
    require(
        ft["unit"] in FINETUNE_UNITS,
        f"finetune.unit must be one of {list(FINETUNE_UNITS)}, got {ft['unit']!r}",
    )
    require(
        is_int(ft["amount"]) and ft["amount"] >= 0,
        f"finetune.amount must be an integer >= 0, got {ft['amount']!r}",
    )
    _positive(ft, "lr", "finetune.lr")
    require(
        is_int(ft["batch_size"]) and ft["batch_size"] >= 1,
        f"finetune.batch_size must be a positive integer, got {ft['batch_size']!r}",
    )
    model = config["model"]
    require(
        model["name"] in MODEL_NAMES,
        f"model.name={model['name']!r} is not one of {list(MODEL_NAMES)}",
    )
    require(
        is_number(model["dropout"]) and 0 <= model["dropout"] < 1,
        f"model.dropout must lie in [0, 1), got {model['dropout']!r}",
    )
    dataset = config["dataset"]
    if model["name"] == "cnn":
        require(
            dataset["image_size"] == 28 and dataset["name"] in ("emnist", "mnist"),
            "model.name=cnn is the FedLab CNN for 1x28x28 images (emnist, mnist); "
            f"got dataset {dataset['name']} at {dataset['image_size']} px",
        )
    if dataset["name"] == "emnist":
        check_emnist(dataset)
    check_partition(config["partition"])
    if config["algorithm"] == "jiang":
        check_jiang(config)


def check_emnist(dataset: dict[str, Any]) -> None:
    """The EMNIST group's keys (``conf/dataset/emnist.yaml``)."""
    absent = [k for k in ("split", "npz_orientation") if k not in dataset]
    require(
        not absent,
        f"dataset.name=emnist lacks {absent}: select the group with dataset=emnist "
        "instead of overriding dataset.name",
    )
    require(
        dataset["split"] in EMNIST_CLASSES,
        f"dataset.split={dataset['split']!r} is not one of {list(EMNIST_CLASSES)}",
    )
    require(
        dataset["npz_orientation"] in ORIENTATIONS,
        f"dataset.npz_orientation must be one of {list(ORIENTATIONS)}, "
        f"got {dataset['npz_orientation']!r}",
    )


def check_partition(partition: dict[str, Any]) -> None:
    """The ``partition`` block."""
    name = partition["name"]
    require(
        name in PARTITIONS, f"partition.name={name!r} is not one of {list(PARTITIONS)}"
    )
    if name == "fallah":
        require(
            is_int(partition["a"]) and partition["a"] >= 2,
            f"partition.a must be an integer >= 2, got {partition['a']!r}",
        )
        _positive(partition, "test_ratio", "partition.test_ratio")
    else:
        require(
            is_int(partition["samples_per_client"])
            and partition["samples_per_client"] >= 2,
            "partition.samples_per_client must be an integer >= 2, "
            f"got {partition['samples_per_client']!r}",
        )
        _positive(partition, "dirichlet_alpha", "partition.dirichlet_alpha")
        fraction = partition["test_fraction"]
        require(
            is_number(fraction) and 0 < fraction < 1,
            f"partition.test_fraction must lie in (0, 1), got {fraction!r}",
        )


def check_jiang(config: dict[str, Any]) -> None:
    """The ``jiang`` block and the client counts it implies."""
    jiang = config["jiang"]
    n, holdout = config["num_clients"], jiang["holdout_clients"]
    require(
        is_int(holdout) and 1 <= holdout < n,
        f"jiang.holdout_clients must lie in 1..num_clients-1={n - 1}, got {holdout!r}",
    )
    require(
        config["clients_per_round"] <= n - holdout,
        f"clients_per_round={config['clients_per_round']} exceeds the "
        f"{n - holdout} training clients (num_clients - jiang.holdout_clients)",
    )
    reptile = jiang["reptile"]
    require(
        is_int(reptile["rounds"]) and reptile["rounds"] >= 0,
        f"jiang.reptile.rounds must be an integer >= 0, got {reptile['rounds']!r}",
    )
    require(
        is_int(reptile["inner_epochs"]) and reptile["inner_epochs"] >= 1,
        "jiang.reptile.inner_epochs must be a positive integer, "
        f"got {reptile['inner_epochs']!r}",
    )
    require(
        reptile.get("optimizer", "client_adam") in REPTILE_OPTIMIZERS,
        f"jiang.reptile.optimizer must be one of {list(REPTILE_OPTIMIZERS)}, "
        f"got {reptile.get('optimizer')!r}",
    )
    _positive(reptile, "client_lr", "jiang.reptile.client_lr")
    _positive(reptile, "lr", "jiang.reptile.lr")
    _positive(reptile, "server_lr", "jiang.reptile.server_lr")
    betas = reptile["betas"]
    require(
        isinstance(betas, list)
        and len(betas) == 2
        and all(is_number(b) and 0 <= b < 1 for b in betas),
        f"jiang.reptile.betas must be two numbers in [0, 1), got {betas!r}",
    )


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


def prepare(cfg: DictConfig) -> Prepared:
    """Resolve and check the config, load and partition the data, build the model."""
    config = to_plain(cfg)
    check_perfedavg(config)
    config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
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
        num_clients=config["num_clients"],
        clients_per_round=config["clients_per_round"],
        num_rounds=config["num_rounds"],
        eval_every=config["eval_every"],
        seed=config["seed"],
        averaging=config["averaging"],
        on_client_failure=config["on_client_failure"],
        server_lr=float(config["server_lr"]),
        server_momentum=float(config["server_momentum"]),
    )


@hydra.main(config_path="../conf", config_name="perfedavg", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one experiment and record it."""
    settings = guarded(lambda: resumed_config(cfg), PREPARATION_ERRORS)
    if settings is None:  # the run in this folder is complete
        return
    prepared: Prepared = guarded(lambda: prepare(settings), PREPARATION_ERRORS)
    config = prepared.config
    algorithm = config["algorithm"]
    extra = (BEFORE,) if algorithm in (*ADAPTING, "jiang") else ()
    recorder: RunRecorder = guarded(
        lambda: open_recorder(config, extra_evals=extra), PREPARATION_ERRORS
    )
    recorder.write_partition(prepared.data.class_counts())
    recorder.set_summary(num_parameters=prepared.num_parameters)
    app = make_client_app(config)
    if algorithm == "jiang":
        recorder.set_summary(heldout_partitions=heldout_partitions(config))
        loop = jiang_main_loop(config, recorder, prepared.initial)
        run_main_loop(loop, recorder, app, config)
        return
    run_experiment(build_strategy(config, recorder), prepared.initial, app, config)


if __name__ == "__main__":
    main()
