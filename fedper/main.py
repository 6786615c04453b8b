"""FedPer, FedAvg and Local-only through Flower's Ray simulation.

Run ``python -m fedper.main key=value ...`` (see ``conf/fedper.yaml``).

Besides the usual entries, ``summary.json`` records ``linear_base`` (the form
of the linear base, or null for the full network) and, for FLICKR-AES,
``client_names`` (the worker id of each partition-id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from fedper.client import initial_model, make_client_app
from fedper.dataset import FederatedData, build_federated_data
from fedper.models import find_linear_base, personal_keys
from fedper.settings import FedPerModel, FedPerSettings, read_settings
from fedper.strategy import FedPer
from pflcore.fl.strategy import server_settings
from pflcore.local.model_check import check_model_input
from pflcore.records.results import RunRecorder
from pflcore.run.experiment import MainLoop, strategy_loop
from pflcore.run.package import AlgorithmPackage, Prepared
from pflcore.run.stopping import run_entry


@dataclass(frozen=True)
class FedPerPrepared(Prepared):
    """FedPer's inputs: besides the base (``initial``), the personal keys."""

    personal: list[str] | None = None


def _initial(
    model_settings: FedPerModel,
    algorithm: str,
    fed: FederatedData,
    *,
    seed: int,
    image_size: int,
) -> tuple[ArrayRecord, list[str], dict[str, Any] | None]:
    """The initial base, the personal keys and the linear base's form (or None).

    ``model_settings`` is the ``model`` group; ``seed`` and ``image_size`` are as
    for :func:`fedper.client.initial_model`.
    """
    model = initial_model(
        model_settings,
        fed.data.num_classes,
        fed.data.channels,
        seed=seed,
        image_size=image_size,
    )
    check_model_input(
        model,
        fed.data.channels,
        image_size,
        f"model.name={model_settings.name} with dataset.image_size={image_size}",
    )
    personal = personal_keys(
        model,
        algorithm,
        model_settings.num_head_layers,
        model_settings.base_buffers,
    )
    base = {k: v for k, v in model.state_dict().items() if k not in set(personal)}
    linear = find_linear_base(model)
    return ArrayRecord(base), personal, linear.describe() if linear else None


class FedPerPackage(AlgorithmPackage):
    """FedPer, FedAvg and Local-only: one model, split into base and head."""

    name = "fedper"
    description = "FedPer (Arivazhagan et al. 2019), FedAvg and Local-only"
    schema = FedPerSettings
    takes_shared_partition = True

    def prepare(self, cfg: DictConfig | dict[str, Any]) -> FedPerPrepared:
        """Resolve and check the config, load and partition the data, build the model.

        Everything here runs before Ray starts, so bad input stops early.
        """
        config = self.resolve(cfg)
        settings = read_settings(config)
        fed = build_federated_data(
            settings.dataset, settings.num_clients, settings.seed, settings.protocol
        )
        base, personal, linear = _initial(
            settings.model,
            settings.algorithm,
            fed,
            seed=settings.seed,
            image_size=settings.dataset.image_size,
        )
        summary: dict[str, Any] = {
            "num_base_tensors": len(base),
            "num_personal_tensors": len(personal),
            "linear_base": linear,
        }
        if fed.client_names is not None:
            summary["client_names"] = list(fed.client_names)
        return FedPerPrepared(config, fed, base, summary, personal)

    def main_loop(self, prepared: Prepared, recorder: RunRecorder) -> MainLoop:
        """FedPer's server: sample-weighted averaging of the base layers."""
        config = prepared.config
        base_keys = list(prepared.initial.keys())
        strategy = FedPer(recorder, base_keys=base_keys, **server_settings(config))
        return strategy_loop(strategy, prepared.initial, config)

    def client_app_for(self, config: dict[str, Any]) -> ClientApp:
        """FedPer's ClientApp for a resolved configuration."""
        return make_client_app(config)


PACKAGE = FedPerPackage()
main = PACKAGE.hydra_main()

if __name__ == "__main__":
    run_entry(main)
