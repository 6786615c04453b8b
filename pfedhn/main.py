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

import torch
from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from pfedhn.client import initial_target, make_client_app, target_model
from pfedhn.dataset import PFedHNData, build_data
from pfedhn.models import HyperNetwork, embedding_dim, target_shapes
from pfedhn.settings import (
    HN_LR,
    PFedHNSettings,
    TargetModel,
    read_settings,
)
from pfedhn.strategy import EXTRA_FIELDS, BaselineFedAvg, PFedHN
from pfedhn.threads import train_threads
from pflcore.fl.baselines import BASELINES
from pflcore.fl.strategy import PartitionStrategy
from pflcore.local.devices import apply_determinism
from pflcore.local.model_check import check_model_input
from pflcore.records.results import RunRecorder
from pflcore.run.experiment import MainLoop, strategy_loop
from pflcore.run.package import AlgorithmPackage, Prepared
from pflcore.run.stopping import run_entry


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


def build_hypernetwork(
    seed: int,
    num_clients: int,
    model: TargetModel,
    data: PFedHNData,
    *,
    image_size: int,
    with_head: bool,
) -> HyperNetwork:
    """The hypernetwork for the run's target, seeded with the run's ``seed``.

    Parameters
    ----------
    seed : int
        The run's seed.
    num_clients : int
        Number of client embeddings N.
    model : TargetModel
        ``model.*``: the target and the hypernetwork's shape (``embed_dim``
        resolved).
    data : PFedHNData
        The clients' data (channels, classes).
    image_size : int
        ``dataset.image_size``.
    with_head : bool
        Whether the target has its classifier (all but ``pfedhn_pc``).
    """
    embed_dim = model.embed_dim
    assert embed_dim is not None, "resolve() fills model.embed_dim"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        target = target_model(model, data, image_size=image_size, with_head=with_head)
        return HyperNetwork(
            num_clients,
            target_shapes(target),
            embed_dim=int(embed_dim),
            hidden_dim=int(model.hidden_dim),
            n_hidden=int(model.n_hidden),
        )


@dataclass(frozen=True)
class PFedHNPrepared(Prepared):
    """pFedHN's inputs: besides the shared ones, its typed settings."""

    settings: PFedHNSettings | None = None


def build_strategy(
    settings: PFedHNSettings, data: PFedHNData, recorder: RunRecorder
) -> tuple[PartitionStrategy, ArrayRecord]:
    """The server strategy and the arrays it starts from.

    Parameters
    ----------
    settings : PFedHNSettings
        The resolved settings (defaults filled): the server reads most of
        them (sampling, rounds, the target, the hypernetwork and its
        optimizer, the novel clients, the device, the client threads).
    data : PFedHNData
        The clients' data.
    recorder : RunRecorder
        The run's recorder (the model sizes go into its summary).
    """
    common: dict[str, Any] = {
        "num_clients": settings.num_clients,
        "clients_per_round": settings.clients_per_round,
        "num_rounds": settings.num_rounds,
        "eval_every": settings.eval_every,
        "seed": settings.seed,
        "on_client_failure": settings.on_client_failure,
    }
    image_size, with_head = settings.dataset.image_size, settings.target_has_head
    target = initial_target(
        settings.seed, settings.model, data, image_size=image_size, with_head=with_head
    )
    check_model_input(
        target,
        data.data.channels,
        image_size,
        f"model.target={settings.model.target} with dataset.image_size={image_size}",
    )
    recorder.set_summary(target_parameters=sum(p.numel() for p in target.parameters()))
    novel = settings.novel
    if settings.algorithm in BASELINES:
        arrays = (
            ArrayRecord()
            if settings.algorithm == "local"
            else ArrayRecord(target.state_dict())
        )
        baseline = BaselineFedAvg(
            recorder,
            held_out=list(novel.clients),
            averaging=settings.averaging,
            **common,
        )
        return baseline, arrays
    hn = build_hypernetwork(
        settings.seed,
        settings.num_clients,
        settings.model,
        data,
        image_size=image_size,
        with_head=with_head,
    )
    recorder.set_summary(
        hypernetwork_parameters=sum(p.numel() for p in hn.parameters())
    )
    h = settings.hn
    assert h.lr is not None and novel.lr is not None, "resolve() fills them"
    apply_determinism(bool(settings.deterministic), settings.server_device)
    strategy = PFedHN(
        recorder,
        hn,
        novel_clients=list(novel.clients),
        novel_rounds=int(novel.rounds),
        lr=h.lr,
        embed_lr=h.embed_lr,
        momentum=h.momentum,
        weight_decay=h.weight_decay,
        clip=h.clip,
        novel_lr=novel.lr,
        device=settings.server_device,
        train_threads=train_threads(
            settings.client_threads,
            settings.clients_per_round,
            settings.client_resources.num_cpus,
        ),
        **common,
    )
    return strategy, ArrayRecord()


class PFedHNPackage(AlgorithmPackage):
    """pFedHN, pFedHN-PC, and FedAvg / Local on the same partition."""

    name = "pfedhn"
    description = "pFedHN and pFedHN-PC (Shamsian et al. 2021), FedAvg and Local-only"
    schema = PFedHNSettings
    takes_shared_partition = True

    def check(self, config: dict[str, Any]) -> PFedHNSettings:
        """The schema's checks, and that ``server_device`` exists here.

        (What a client's parse leaves out.)

        Raises
        ------
        ConfigError
            On the first setting that cannot work, in one line naming it.
        """
        settings = super().check(config)
        assert isinstance(settings, PFedHNSettings)
        settings.check_server_device()
        return settings

    def complete(self, config: dict[str, Any]) -> None:
        """Fill the settings whose default depends on others."""
        resolve_defaults(config)

    def prepare(self, cfg: DictConfig | dict[str, Any]) -> PFedHNPrepared:
        """Resolve and check the config, load and partition the data."""
        config = self.resolve(cfg)
        settings = read_settings(config)
        data = build_data(
            settings.dataset,
            settings.partition,
            settings.num_clients,
            settings.seed,
            settings.novel,
            settings.protocol,
        )
        summary: dict[str, Any] = {
            "split_sizes": {s: sum(v) for s, v in data.sizes().items()},
            "client_classes": data.assignment.classes,
        }
        if data.novel:  # the drawn novel clients and their distances (novel.py)
            summary["novel_clients"] = list(data.novel)
        return PFedHNPrepared(config, data, ArrayRecord(), summary, settings)

    def recorder_options(self, prepared: Prepared) -> dict[str, Any]:
        """The validation and phase columns of ``rounds.csv``."""
        return {"extra_fields": EXTRA_FIELDS}

    def main_loop(self, prepared: Prepared, recorder: RunRecorder) -> MainLoop:
        """The hypernetwork's server, or FedAvg's for the baselines."""
        assert isinstance(prepared, PFedHNPrepared) and prepared.settings is not None
        assert isinstance(prepared.data, PFedHNData)
        strategy, arrays = build_strategy(prepared.settings, prepared.data, recorder)
        rounds = {**prepared.config, "num_rounds": strategy.num_rounds}
        return strategy_loop(strategy, arrays, rounds)

    def client_app_for(self, config: dict[str, Any]) -> ClientApp:
        """The pFedHN ClientApp for a resolved configuration."""
        return make_client_app(config)


PACKAGE = PFedHNPackage()
main = PACKAGE.hydra_main()

if __name__ == "__main__":
    run_entry(main)
