"""Per-FedAvg FO/HF, FedAvg (+ update), Local-only and the Jiang et al. pipeline.

Run ``python -m perfedavg.main key=value ...`` (see ``conf/perfedavg.yaml``).
Every setting is checked, and the data loaded and partitioned, before Ray
starts: an impossible setting stops with one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from perfedavg.client import initial_model, make_client_app
from perfedavg.dataset import build_client_data
from perfedavg.jiang import heldout_partitions, jiang_main_loop, last_round
from perfedavg.models import count_parameters
from perfedavg.settings import (
    ADAPTING,
    META,
    PerFedAvgSettings,
    read_settings,
)
from perfedavg.strategy import BEFORE, PersonalizedFedAvg
from pflcore.config import ConfigError
from pflcore.config.settings import require
from pflcore.data.client_data import ClientData
from pflcore.fl.strategy import server_settings
from pflcore.local.model_check import check_model_input
from pflcore.records.results import RunRecorder
from pflcore.run.experiment import Checkpointer, MainLoop, strategy_loop
from pflcore.run.package import AlgorithmPackage, Prepared
from pflcore.run.stopping import run_entry


def check_batches(settings: PerFedAvgSettings, data: ClientData) -> None:
    """Batches drawn without replacement must fit in every client's training split."""
    sizes = data.sizes()["train"]
    smallest = min(sizes)
    who = sizes.index(smallest)
    uses_steps = settings.algorithm in META or settings.local_steps > 0
    if uses_steps:
        require(
            settings.batch_size <= smallest,
            f"batch_size={settings.batch_size} exceeds the {smallest} training "
            f"samples of client {who}; lower batch_size",
        )
    ft = settings.finetune
    adapts = settings.algorithm in (*ADAPTING, "jiang")
    if adapts and ft.unit == "steps" and ft.amount > 0:
        require(
            ft.batch_size <= smallest,
            f"finetune.batch_size={ft.batch_size} exceeds the {smallest} "
            f"training samples of client {who}",
        )


@dataclass(frozen=True)
class PerFedAvgPrepared(Prepared):
    """Per-FedAvg's inputs: besides the shared ones, its typed settings."""

    settings: PerFedAvgSettings | None = None


def build_strategy(
    recorder: RunRecorder,
    server: dict[str, Any],
    *,
    server_lr: float,
    server_momentum: float,
) -> PersonalizedFedAvg:
    """The server of every one-stage algorithm: the same averaging rule for all.

    Per-FedAvg, FedAvg (+ update) and Local differ only on the client; the
    server averages by the run's ``averaging`` setting whichever runs.

    Parameters
    ----------
    recorder : RunRecorder
        The run's recorder.
    server : dict
        :class:`pflcore.fl.strategy.PartitionStrategy`'s keywords
        (:func:`pflcore.fl.strategy.server_settings` of the run's config).
    server_lr, server_momentum : float
        The server's step along the averaged update and its momentum.
    """
    return PersonalizedFedAvg(
        recorder,
        **server,
        server_lr=float(server_lr),
        server_momentum=float(server_momentum),
    )


class PerFedAvgPackage(AlgorithmPackage):
    """Per-FedAvg FO/HF, FedAvg (+ update), Local-only and Jiang et al.'s pipeline."""

    name = "perfedavg"
    description = "Per-FedAvg FO/HF (Fallah et al. 2020), FedAvg (+ update), Local"
    schema = PerFedAvgSettings
    takes_shared_partition = True

    def prepare(self, cfg: DictConfig | dict[str, Any]) -> PerFedAvgPrepared:
        """Resolve and check the config, load and partition the data, build a model."""
        config = self.resolve(cfg)
        settings = read_settings(config)
        data = build_client_data(
            settings.dataset,
            settings.partition,
            settings.num_clients,
            settings.seed,
            settings.protocol,
        )
        check_batches(settings, data)
        try:
            model = initial_model(
                settings.model,
                data,
                image_size=settings.dataset.image_size,
                seed=settings.seed,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        size = settings.dataset.image_size
        check_model_input(
            model,
            data.data.channels,
            size,
            f"model.name={settings.model.name} with dataset.image_size={size}",
        )
        initial = (
            ArrayRecord()
            if settings.algorithm == "local"
            else ArrayRecord(model.state_dict())
        )
        summary = {"num_parameters": count_parameters(model)}
        return PerFedAvgPrepared(config, data, initial, summary, settings)

    def recorder_options(self, prepared: Prepared) -> dict[str, Any]:
        """The adapting algorithms also test the received model, before adapting."""
        adapts = prepared.config["algorithm"] in (*ADAPTING, "jiang")
        return {"extra_evals": (BEFORE,) if adapts else ()}

    def main_loop(self, prepared: Prepared, recorder: RunRecorder) -> MainLoop:
        """One server for the one-stage algorithms; Jiang et al.'s stages."""
        assert isinstance(prepared, PerFedAvgPrepared) and prepared.settings
        settings, config = prepared.settings, prepared.config
        server = server_settings(config)
        if settings.algorithm != "jiang":
            strategy = build_strategy(
                recorder,
                server,
                server_lr=settings.server_lr,
                server_momentum=settings.server_momentum,
            )
            return strategy_loop(strategy, prepared.initial, config)
        jiang = settings.jiang
        recorder.set_summary(
            heldout_partitions=heldout_partitions(
                settings.num_clients, jiang.holdout_clients
            )
        )
        checkpoints = Checkpointer(
            config, recorder, last_round(settings.num_rounds, jiang.reptile.rounds)
        )
        return jiang_main_loop(
            recorder,
            prepared.initial,
            checkpoints,
            server=server,
            jiang=jiang,
            server_lr=settings.server_lr,
            server_momentum=settings.server_momentum,
            timeout=float(settings.timeout_s),
        )

    def client_app_for(self, config: dict[str, Any]) -> ClientApp:
        """Per-FedAvg's ClientApp (every algorithm's) for a resolved configuration."""
        return make_client_app(config)


PACKAGE = PerFedAvgPackage()
main = PACKAGE.hydra_main()

if __name__ == "__main__":
    run_entry(main)
