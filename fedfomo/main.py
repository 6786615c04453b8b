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

from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from fedfomo.client import baseline_update, make_client_app
from fedfomo.dataset import FomoData, build_fomo_data, distribution_labels
from fedfomo.models import build_model
from fedfomo.settings import FedFomoSettings, Fomo, read_settings
from fedfomo.strategy import FedFomo
from pflcore.config import absolute_data_root
from pflcore.fl.baselines import make_baseline_client_app
from pflcore.fl.strategy import PartitionStrategy, server_settings
from pflcore.local.model_check import check_model_input
from pflcore.records.results import RunRecorder
from pflcore.run.experiment import MainLoop, strategy_loop
from pflcore.run.package import AlgorithmPackage, Prepared
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


@dataclass(frozen=True)
class FomoPrepared(Prepared):
    """FedFomo's inputs: besides the shared ones, its typed settings."""

    settings: FedFomoSettings | None = None


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


class FedFomoPackage(AlgorithmPackage):
    """FedFomo, FedAvg, FedAvg + FT and Local-only on FedFomo's partitions."""

    name = "fedfomo"
    description = "FedFomo (Zhang et al. 2021), FedAvg (+ FT) and Local-only"
    schema = FedFomoSettings
    takes_shared_partition = True

    def complete(self, config: dict[str, Any]) -> None:
        """Make the embedding's paths absolute, as the data root."""
        if config["partition"].get("embedding"):
            block = config["partition"]["embedding"]
            block["cache_dir"] = absolute_data_root(block["cache_dir"])
        if config["partition"].get("embedding_path"):
            config["partition"]["embedding_path"] = absolute_data_root(
                config["partition"]["embedding_path"]
            )

    def prepare(self, cfg: DictConfig | dict[str, Any]) -> FomoPrepared:
        """Resolve and check the config, load and partition the data, build a model."""
        config = self.resolve(cfg)
        settings = read_settings(config)
        data = build_fomo_data(
            settings.dataset,
            settings.partition,
            settings.num_clients,
            settings.seed,
            settings.protocol,
        )
        model = build_model(
            settings.seed,
            data.data.num_classes,
            data.data.channels,
            settings.dataset.image_size,
            settings.model.name,
        )
        size = settings.dataset.image_size
        check_model_input(model, data.data.channels, size, f"dataset.image_size={size}")
        weights = ArrayRecord(model.state_dict())
        summary = {
            "num_parameters": sum(int(a.numpy().size) for a in weights.values()),
            "train_samples": [int(t.size) for t in data.train],
            "val_samples": [int(v.size) for v in data.val],
            "test_samples": [int(t.size) for t in data.test],
            "test_split": settings.dataset.test_split,
            "client_distribution": data.distribution,
            **distribution_summary(data),
        }
        # FedFomo's server sends each client chosen models, not one global model
        sends_initial = settings.algorithm not in ("fedfomo", "local")
        initial = weights if sends_initial else ArrayRecord()
        return FomoPrepared(config, data, initial, summary, settings)

    def recorder_options(self, prepared: Prepared) -> dict[str, Any]:
        """FedAvg + FT also tests the global model before fine-tuning.

        FedAvg's own numbers, from the same training (see ``baseline_update``).
        """
        fedavg_ft = prepared.config["algorithm"] == "fedavg_ft"
        return {"extra_evals": ("before",) if fedavg_ft else ()}

    def main_loop(self, prepared: Prepared, recorder: RunRecorder) -> MainLoop:
        """FedFomo's server, or FedAvg's for the baselines."""
        assert isinstance(prepared, FomoPrepared) and prepared.settings is not None
        settings = prepared.settings
        strategy = build_strategy(
            recorder,
            server_settings(prepared.config),
            settings.algorithm,
            settings.fomo,
        )
        return strategy_loop(strategy, prepared.initial, prepared.config)

    def client_app_for(self, config: dict[str, Any]) -> ClientApp:
        """FedFomo's ClientApp, or the shared baseline ClientApp, for ``config``."""
        settings = read_settings(config)
        if settings.algorithm == "fedfomo":
            return make_client_app(config)
        return make_baseline_client_app(
            settings.algorithm, baseline_update(settings, config)
        )


PACKAGE = FedFomoPackage()
main = PACKAGE.hydra_main()

if __name__ == "__main__":
    run_entry(main)
