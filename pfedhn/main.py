"""pFedHN, pFedHN-PC, and FedAvg / Local on the same partition, through Flower.

Run ``python -m pfedhn.main key=value ...`` (see ``conf/pfedhn.yaml``).

``summary.json`` adds ``best_val`` (test figures at the training round with
the best pooled validation accuracy: the paper's headline), ``novel`` (the
held-out clients after embedding-only fitting), the partition's split sizes,
and the sizes of the target and the hypernetwork.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hydra
import torch
from flwr.app import ArrayRecord
from omegaconf import DictConfig

from pfedhn.client import initial_target, make_client_app, target_model
from pfedhn.dataset import PFedHNData, build_data
from pfedhn.models import TARGETS, HyperNetwork, embedding_dim, target_shapes
from pfedhn.strategy import EXTRA_FIELDS, BaselineFedAvg, PFedHN
from pfedhn.threads import train_threads
from pflcore.config import (
    ConfigError,
    absolute_data_root,
    check_common,
    is_int,
    reject_subset,
    require,
    to_plain,
)
from pflcore.data import DataFormatError, DatasetNotFoundError
from pflcore.devices import apply_determinism
from pflcore.experiment import guarded, open_recorder, resumed_config, run_experiment
from pflcore.partition import PartitionError
from pflcore.results import RunRecorder
from pflcore.strategy import PartitionFedAvg

ALGORITHMS = ("pfedhn", "pfedhn_pc", "fedavg", "local")
HN_LR = {"pfedhn": 1e-2, "pfedhn_pc": 5e-2}  # the authors' defaults
PREPARATION_ERRORS = (
    ConfigError,
    PartitionError,
    DatasetNotFoundError,
    DataFormatError,
)
FEDPER_PARTITION_KEYS = (
    "pool_test",
    "test_fraction",
    "classes_per_client",
    "class_assignment",
)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def check_pfedhn(config: dict[str, Any]) -> None:
    """PFedHN settings on top of :func:`pflcore.config.check_common`.

    Raises
    ------
    ConfigError
        On the first setting that cannot work.
    """
    # pFedHN counts local work in steps; the shared check wants local_epochs.
    check_common({**config, "local_epochs": 1}, ALGORITHMS)
    reject_subset(config, "client sizes follow partition.* (val_size, test_size)")
    threads = config["client_threads"]
    require(
        threads == "auto" or (is_int(threads) and threads >= 1),
        f"client_threads must be 'auto' or a positive integer, got {threads!r}",
    )
    n = config["num_clients"]
    if not (is_int(config["local_steps"]) and config["local_steps"] >= 1):
        raise ConfigError(
            f"local_steps must be a positive integer, got {config['local_steps']!r}"
        )
    if not _positive(config["clip"]):
        raise ConfigError(f"clip must be > 0, got {config['clip']!r}")
    if config["normalize"] not in ("paper", "data"):
        raise ConfigError(
            f"normalize must be paper or data, got {config['normalize']!r}"
        )
    model = config["model"]
    if model["target"] not in TARGETS:
        raise ConfigError(
            f"model.target must be one of {TARGETS}, got {model['target']!r}"
        )
    for key in ("hidden_dim", "n_kernels"):
        if not (is_int(model[key]) and model[key] >= 1):
            raise ConfigError(
                f"model.{key} must be a positive integer, got {model[key]!r}"
            )
    if not (is_int(model["n_hidden"]) and model["n_hidden"] >= 0):
        raise ConfigError(
            f"model.n_hidden must be an integer >= 0, got {model['n_hidden']!r}"
        )
    if model["embed_dim"] is not None and not (
        is_int(model["embed_dim"]) and model["embed_dim"] >= 1
    ):
        raise ConfigError(
            f"model.embed_dim must be null or >= 1, got {model['embed_dim']!r}"
        )
    hn = config["hn"]
    for key in ("momentum",):
        if not (isinstance(hn[key], int | float) and 0 <= hn[key] < 1):
            raise ConfigError(f"hn.{key} must lie in [0, 1), got {hn[key]!r}")
    for key in ("lr", "embed_lr"):
        if hn[key] is not None and not _positive(hn[key]):
            raise ConfigError(f"hn.{key} must be null or > 0, got {hn[key]!r}")
    if not _positive(hn["clip"]) or not (
        isinstance(hn["weight_decay"], int | float) and hn["weight_decay"] >= 0
    ):
        raise ConfigError(f"hn.clip must be > 0 and hn.weight_decay >= 0, got {hn}")
    part = config["partition"]
    if part["test_source"] not in ("official", "train"):
        raise ConfigError(
            "partition.test_source must be official or train, "
            f"got {part['test_source']!r}"
        )
    for key in ("classes_per_client", "val_size", "test_size"):
        if not (is_int(part[key]) and part[key] >= 1):
            raise ConfigError(
                f"partition.{key} must be a positive integer, got {part[key]!r}"
            )
    if not (
        _positive(part["low"])
        and _positive(part["high"])
        and part["low"] <= part["high"]
    ):
        raise ConfigError(f"need 0 < partition.low <= partition.high, got {part}")
    stray = [k for k in FEDPER_PARTITION_KEYS if config["dataset"].get(k) is not None]
    if stray:
        raise ConfigError(
            f"dataset.{stray[0]} is FedPer's partition setting; pFedHN's partition is "
            "set under partition.* (classes_per_client, val_size, test_source, ...)"
        )
    novel = config["novel"]
    clients = novel["clients"]
    if not (
        isinstance(clients, list) and all(is_int(j) and 0 <= j < n for j in clients)
    ):
        raise ConfigError(
            f"novel.clients must list partition-ids in 0..{n - 1}, got {clients!r}"
        )
    if len(set(clients)) != len(clients) or len(clients) >= n:
        raise ConfigError(
            "novel.clients must be distinct and leave some client to train, "
            f"got {clients}"
        )
    if clients and config["algorithm"] not in HN_LR:
        raise ConfigError("novel.clients needs algorithm=pfedhn or pfedhn_pc")
    if not (is_int(novel["rounds"]) and novel["rounds"] >= 0):
        raise ConfigError(
            f"novel.rounds must be an integer >= 0, got {novel['rounds']!r}"
        )
    if clients and novel["rounds"] < 1:
        raise ConfigError("novel.clients are set: novel.rounds must be >= 1")
    if novel["lr"] is not None and not _positive(novel["lr"]):
        raise ConfigError(f"novel.lr must be null or > 0, got {novel['lr']!r}")
    if config["clients_per_round"] > n - len(clients):
        raise ConfigError(
            f"clients_per_round={config['clients_per_round']} exceeds the "
            f"{n - len(clients)} clients that train"
        )
    if config["server_device"].startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"server_device={config['server_device']!r} but CUDA is not available"
        )


def resolve_defaults(config: dict[str, Any]) -> None:
    """Fill the settings whose default depends on others (stored resolved)."""
    hn = config["hn"]
    if hn["lr"] is None:
        hn["lr"] = HN_LR.get(config["algorithm"], 1e-2)
    if hn["embed_lr"] is None:
        hn["embed_lr"] = hn["lr"]
    if config["model"]["embed_dim"] is None:
        config["model"]["embed_dim"] = embedding_dim(config["num_clients"])
    if config["novel"]["lr"] is None:
        config["novel"]["lr"] = hn["lr"]


def build_hypernetwork(config: dict[str, Any], data: PFedHNData) -> HyperNetwork:
    """The seeded hypernetwork for the run's target."""
    model = config["model"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        return HyperNetwork(
            config["num_clients"],
            target_shapes(target_model(config, data)),
            embed_dim=int(model["embed_dim"]),
            hidden_dim=int(model["hidden_dim"]),
            n_hidden=int(model["n_hidden"]),
        )


@dataclass(frozen=True)
class Prepared:
    """Everything ``main`` needs, built and checked before Ray starts."""

    config: dict[str, Any]
    data: PFedHNData


def prepare(cfg: DictConfig) -> Prepared:
    """Resolve and check the config, load and partition the data."""
    config = to_plain(cfg)
    check_pfedhn(config)
    resolve_defaults(config)
    config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
    data = build_data(
        config["dataset"], config["partition"], config["num_clients"], config["seed"]
    )
    return Prepared(config, data)


def build_strategy(
    config: dict[str, Any], data: PFedHNData, recorder: RunRecorder
) -> tuple[PartitionFedAvg, ArrayRecord]:
    """The server strategy and the arrays it starts from."""
    common = {
        "num_clients": config["num_clients"],
        "clients_per_round": config["clients_per_round"],
        "num_rounds": config["num_rounds"],
        "eval_every": config["eval_every"],
        "seed": config["seed"],
        "on_client_failure": config["on_client_failure"],
    }
    target = initial_target(config, data)
    recorder.set_summary(target_parameters=sum(p.numel() for p in target.parameters()))
    if config["algorithm"] in ("fedavg", "local"):
        arrays = (
            ArrayRecord(target.state_dict())
            if config["algorithm"] == "fedavg"
            else ArrayRecord()
        )
        baseline = BaselineFedAvg(recorder, averaging=config["averaging"], **common)
        return baseline, arrays
    hn = build_hypernetwork(config, data)
    recorder.set_summary(
        hypernetwork_parameters=sum(p.numel() for p in hn.parameters())
    )
    h = config["hn"]
    apply_determinism(bool(config.get("deterministic", True)), config["server_device"])
    strategy = PFedHN(
        recorder,
        hn,
        novel_clients=list(config["novel"]["clients"]),
        novel_rounds=int(config["novel"]["rounds"]),
        lr=h["lr"],
        embed_lr=h["embed_lr"],
        momentum=h["momentum"],
        weight_decay=h["weight_decay"],
        clip=h["clip"],
        novel_lr=config["novel"]["lr"],
        device=config["server_device"],
        train_threads=train_threads(
            config["client_threads"],
            config["clients_per_round"],
            config["client_resources"]["num_cpus"],
        ),
        **common,
    )
    return strategy, ArrayRecord()


@hydra.main(config_path="../conf", config_name="pfedhn", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one pFedHN / pFedHN-PC / FedAvg / Local experiment and record it."""
    settings = guarded(lambda: resumed_config(cfg), PREPARATION_ERRORS)
    if settings is None:  # the run in this folder is complete
        return
    prepared: Prepared = guarded(lambda: prepare(settings), PREPARATION_ERRORS)
    config, data = prepared.config, prepared.data
    recorder: RunRecorder = guarded(
        lambda: open_recorder(config, extra_fields=EXTRA_FIELDS), PREPARATION_ERRORS
    )
    recorder.write_partition(data.class_counts())
    recorder.set_summary(
        split_sizes={s: sum(v) for s, v in data.sizes().items()},
        client_classes=data.assignment.classes,
    )
    strategy, arrays = build_strategy(config, data, recorder)
    run_config = {**config, "num_rounds": strategy.num_rounds}
    run_experiment(strategy, arrays, make_client_app(config), run_config)


if __name__ == "__main__":
    main()
