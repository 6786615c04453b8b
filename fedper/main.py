"""FedPer, FedAvg and Local-only through Flower's Ray simulation.

Run ``python -m fedper.main key=value ...`` (see ``conf/fedper.yaml``).
"""

from __future__ import annotations

from typing import Any

import hydra
from flwr.app import ArrayRecord
from omegaconf import DictConfig

from fedper.client import initial_model, make_client_app
from fedper.dataset import FederatedData, build_federated_data
from fedper.models import MODEL_NAMES, personal_keys
from fedper.strategy import FedPer
from pflcore.config import ConfigError, absolute_data_root, check_common, to_plain
from pflcore.data import DatasetNotFoundError
from pflcore.experiment import guarded, hydra_output_dir, run_experiment
from pflcore.partition import PartitionError
from pflcore.results import RunRecorder

ALGORITHMS = ("fedper", "fedavg", "local")
PREPARATION_ERRORS = (ConfigError, PartitionError, DatasetNotFoundError, ValueError)


def prepare(cfg: DictConfig) -> tuple[dict[str, Any], FederatedData]:
    """Resolve and check the config, load and partition the data.

    Everything here runs before Ray starts, so bad input stops early.
    """
    config = to_plain(cfg)
    check_common(config, ALGORITHMS)
    if config["model"]["name"] not in MODEL_NAMES:
        raise ConfigError(
            f"model.name={config['model']['name']!r} is not one of {MODEL_NAMES}"
        )
    if (
        config["algorithm"] == "fedper"
        and not 1 <= config["model"]["num_head_layers"] <= 4
    ):
        raise ConfigError(
            "model.num_head_layers (K_P) must lie in 1..4, "
            f"got {config['model']['num_head_layers']}"
        )
    config["dataset"]["root"] = absolute_data_root(config["dataset"]["root"])
    fed = build_federated_data(config["dataset"], config["num_clients"], config["seed"])
    return config, fed


def initial_arrays(
    config: dict[str, Any], fed: FederatedData
) -> tuple[ArrayRecord, list[str]]:
    """The base the server starts from, and the personal keys clients keep."""
    model = initial_model(config, fed.data.num_classes, fed.data.channels)
    personal = personal_keys(
        model,
        config["algorithm"],
        config["model"]["num_head_layers"],
        config["model"]["base_buffers"],
    )
    base = {k: v for k, v in model.state_dict().items() if k not in set(personal)}
    return ArrayRecord(base), personal


@hydra.main(config_path="../conf", config_name="fedper", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one FedPer/FedAvg/Local experiment and record it."""
    config, fed = guarded(lambda: prepare(cfg), PREPARATION_ERRORS)
    recorder = RunRecorder(hydra_output_dir(), config)
    recorder.write_partition(fed.class_counts())
    base, personal = initial_arrays(config, fed)
    recorder.set_summary(num_base_tensors=len(base), num_personal_tensors=len(personal))
    strategy = FedPer(
        recorder,
        base_keys=list(base.keys()),
        num_clients=config["num_clients"],
        clients_per_round=config["clients_per_round"],
        num_rounds=config["num_rounds"],
        eval_every=config["eval_every"],
        seed=config["seed"],
    )
    run_experiment(strategy, base, make_client_app(config), config)


if __name__ == "__main__":
    main()
