"""pFedHN, pFedHN-PC, and FedAvg / Local on the same partition, through Flower.

Run ``python -m pfedhn.main key=value ...`` (see ``conf/pfedhn.yaml``).

``summary.json`` adds ``best_val`` (test figures at the training round with
the best pooled validation accuracy: the paper's headline), ``novel`` (the
held-out clients after embedding-only fitting), the partition's split sizes,
and the sizes of the target and the hypernetwork.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import hydra
import torch
from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from pfedhn.client import initial_target, make_client_app, target_model
from pfedhn.dataset import PFedHNData, build_data
from pfedhn.models import HyperNetwork, embedding_dim, target_shapes
from pfedhn.settings import HN_LR, PFedHNSettings, parse_settings
from pfedhn.strategy import EXTRA_FIELDS, BaselineFedAvg, PFedHN
from pfedhn.threads import train_threads
from pflcore.apps import AppPackage
from pflcore.baselines import BASELINES
from pflcore.config import absolute_data_root, to_plain
from pflcore.devices import apply_determinism
from pflcore.experiment import Experiment, open_recorder, strategy_loop
from pflcore.launch import launch
from pflcore.results import RunRecorder
from pflcore.strategy import PartitionFedAvg


def check_pfedhn(config: dict[str, Any]) -> PFedHNSettings:
    """Check the composed config against :class:`pfedhn.settings.PFedHNSettings`.

    Raises
    ------
    ConfigError
        On the first setting that cannot work, in one line naming it.
    """
    return parse_settings(config)


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
    novel = config["novel"]
    if novel.get("dirichlet"):  # the drawn novel clients are the last partition-ids
        count = len(novel["dirichlet"]) * int(novel["per_concentration"])
        n = config["num_clients"]
        novel["clients"] = list(range(n - count, n))


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


def resolve(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The checked configuration, defaults filled and paths absolute.

    What server and clients use; idempotent, so the launcher, the ServerApp
    and every ClientApp that apply it to the same run config agree.
    """
    config = copy.deepcopy(to_plain(cfg) if isinstance(cfg, DictConfig) else cfg)
    check_pfedhn(config)
    resolve_defaults(config)
    config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
    return config


def prepare(cfg: DictConfig | dict[str, Any]) -> Prepared:
    """Resolve and check the config, load and partition the data."""
    config = resolve(cfg)
    data = build_data(
        config["dataset"],
        config["partition"],
        config["num_clients"],
        config["seed"],
        config["novel"],
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
    if config["algorithm"] in BASELINES:
        arrays = (
            ArrayRecord()
            if config["algorithm"] == "local"
            else ArrayRecord(target.state_dict())
        )
        baseline = BaselineFedAvg(
            recorder,
            held_out=list(config["novel"]["clients"]),
            averaging=config["averaging"],
            **common,
        )
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


def client_app_for(config: dict[str, Any]) -> ClientApp:
    """The pFedHN ClientApp for a resolved configuration."""
    return make_client_app(config)


def build_experiment(
    settings: DictConfig | dict[str, Any], out_dir: str | None = None
) -> Experiment:
    """Load the data, build the server (and its hypernetwork): a run ready to start.

    Raises
    ------
    ConfigError, PartitionError, DatasetNotFoundError, DataFormatError
        On bad input, in one line.
    """
    prepared = prepare(settings)
    config, data = prepared.config, prepared.data
    recorder = open_recorder(config, out_dir, extra_fields=EXTRA_FIELDS)
    recorder.write_partition(data.class_counts())
    recorder.set_summary(
        split_sizes={s: sum(v) for s, v in data.sizes().items()},
        client_classes=data.assignment.classes,
    )
    if data.novel:  # the drawn novel clients and their distances (pfedhn/novel.py)
        recorder.set_summary(novel_clients=list(data.novel))
    strategy, arrays = build_strategy(config, data, recorder)
    rounds = {**config, "num_rounds": strategy.num_rounds}
    loop = strategy_loop(strategy, arrays, rounds)
    return Experiment(rounds, recorder, loop, client_app_for(config))


PACKAGE = AppPackage(
    "pfedhn",
    PFedHNSettings,
    resolve,
    build_experiment,
    client_app_for,
    prepare,
)


@hydra.main(config_path="../conf", config_name="pfedhn", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one pFedHN / pFedHN-PC / FedAvg / Local experiment and record it."""
    launch(cfg, PACKAGE)


if __name__ == "__main__":
    main()
