"""Every FedFomo preset composes, and every point of its sweep passes the checks."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fedfomo.main import PACKAGE
from pflcore.config import to_plain

CONF = Path(__file__).resolve().parents[1] / "conf"
PRESETS = sorted(p.stem for p in (CONF / "experiment" / "fedfomo").glob("*.yaml"))


def composed(preset: str, *overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "fedfomo",
            overrides=[f"experiment=fedfomo/{preset}", *overrides],
            return_hydra_config=hydra,
        )


def sweep_points(preset: str) -> list[list[str]]:
    node = composed(preset, hydra=True).hydra.sweeper.params
    params = OmegaConf.to_container(node) if node is not None else {}
    assert isinstance(params, dict)
    axes = [
        [f"{k}={v}" for v in str(values).split(",")]
        for k, values in (params or {}).items()
    ]
    return [list(point) for point in itertools.product(*axes)]


def test_presets_exist():
    assert set(PRESETS) >= {
        "quick",
        "paper",
        "paper_pathological",
        "clients100",
        "cifar100",
        "cifar10_cpu",
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_every_sweep_point_passes_the_checks(preset):
    for point in sweep_points(preset) or [[]]:
        PACKAGE.check(to_plain(composed(preset, *point)))


def test_paper_preset_matches_the_authors_settings():
    c = to_plain(composed("paper"))
    assert (c["num_clients"], c["clients_per_round"]) == (15, 15)
    assert (c["num_rounds"], c["local_epochs"], c["batch_size"]) == (20, 5, 50)
    assert (c["lr"], c["lr_decay"], c["momentum"], c["weight_decay"]) == (
        0.1,
        0.99,
        0.0,
        1e-4,
    )
    assert c["fomo"]["num_candidates"] == 5 and c["fomo"]["norm"] == "l1"
    assert c["fomo"]["num_clusters"] == 5 and c["fomo"]["global_candidate"] is True
    assert c["dataset"]["test_split"] == "official"  # 2667 / 667 / 667 per client
    assert c["partition"]["features"] == "trained" and c["partition"]["pca_dim"] == 256
    assert c["averaging"] == "samples"
    assert c["partition"]["kind"] == "latent" and c["partition"]["val_fraction"] == 0.2
    assert c["dataset"]["crop_padding"] == 4 and c["dataset"]["flip"] is True
    hundred = to_plain(composed("clients100"))
    assert (hundred["num_clients"], hundred["clients_per_round"]) == (100, 10)
    # the authors' num_distributions=10 on CIFAR-10: one class per distribution
    assert hundred["partition"]["features"] == "labels"
    assert hundred["partition"]["num_distributions"] == 10
    assert hundred["fomo"]["num_clusters"] == 10
