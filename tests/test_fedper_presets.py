"""Every FedPer preset composes, and every point of its sweep passes the checks.

Composition only (no data, no Ray): a preset with a typo or a sweep point that
``PACKAGE.check`` rejects would otherwise fail hours into a figure run.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fedper.main import PACKAGE
from pflcore.config import to_plain

CONF = Path(__file__).resolve().parents[1] / "conf"
PRESETS = sorted(p.stem for p in (CONF / "experiment" / "fedper").glob("*.yaml"))
# check_resources rejects GPU shares without CUDA; the GPU presets ask for them.
CPU = ["client_resources.num_gpus=0", "client_resources.num_cpus=1"]


def sweep_points(preset: str) -> list[list[str]]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "fedper",
            overrides=[f"experiment=fedper/{preset}"],
            return_hydra_config=True,
        )
    params = OmegaConf.to_container(cfg.hydra.sweeper.params) or {}
    assert isinstance(params, dict)
    axes = [
        [f"{k}={v}" for v in str(values).split(",")] for k, values in params.items()
    ]
    return [list(point) for point in itertools.product(*axes)]


def composed(preset: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "fedper", overrides=[f"experiment=fedper/{preset}", *CPU, *overrides]
        )
    return to_plain(cfg)


def test_the_new_presets_exist():
    assert {
        "figure7",
        "figure8",
        "figure14",
        "cifar100",
        "finetune",
        "finetune_flickr",
        "finetune_cpu",
        "linear_base",
        "linear_base_flickr",
        "linear_base_cpu",
    } <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_sweep_point_passes_the_checks(preset):
    points = sweep_points(preset)
    assert points
    for point in points:
        PACKAGE.check(composed(preset, *point))


def test_flickr_presets_follow_the_paper_and_flower():
    for preset, model in (("figure7", "mobilenet_v1"), ("figure8", "resnet34")):
        config = composed(preset)
        assert config["dataset"]["name"] == "flickr"
        assert config["model"]["name"] == model
        assert (config["num_clients"], config["clients_per_round"]) == (30, 30)
        assert (config["batch_size"], config["num_rounds"]) == (4, 35)
        assert config["dataset"]["image_size"] == 224
        assert config["dataset"]["min_ratings"] == 60
        assert config["dataset"]["max_ratings"] == 290
        assert sweep_points(preset) == [["algorithm=fedavg"], ["algorithm=fedper"]]


def test_variant_presets_sweep_what_their_figures_compare():
    for preset in ("finetune", "finetune_flickr", "finetune_cpu"):
        assert {p for point in sweep_points(preset) for p in point} >= {
            "head_finetune_epochs=0",
            "head_finetune_epochs=1",
        }
        assert composed(preset)["algorithm"] == "fedper"
    for preset in ("linear_base", "linear_base_flickr", "linear_base_cpu"):
        points = sweep_points(preset)
        assert any(
            {"algorithm=fedper", "model.linear_base=false"} <= set(p) for p in points
        )
        assert any(
            {"algorithm=fedper", "model.linear_base=true"} <= set(p) for p in points
        )
        assert any(
            {"algorithm=local", "model.linear_base=false"} <= set(p) for p in points
        )
    for preset in ("finetune_cpu", "linear_base_cpu"):
        config = composed(preset)
        assert (config["num_rounds"], config["local_epochs"]) == (10, 1)
        assert config["dataset"]["source"] == "npz"
        assert config["dataset"]["path"] == "cifar10/cifar10_train.npz"
    assert sorted(
        {p for point in sweep_points("cifar100") for p in point if "classes" in p}
    ) == [
        "dataset.classes_per_client=100",
        "dataset.classes_per_client=40",
        "dataset.classes_per_client=80",
    ]
    assert [p[0] for p in sweep_points("figure14")] == [
        f"model.num_head_layers={k}" for k in (1, 2, 3, 4)
    ]
    assert composed("figure14")["dataset"]["name"] == "cifar100"
