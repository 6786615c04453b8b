"""Device placement helpers and the ``deterministic`` setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from fedper.settings import parse_settings
from pflcore.config import ConfigError, to_plain
from pflcore.local.devices import (
    CUBLAS_WORKSPACE,
    SplitCache,
    apply_determinism,
    place_model,
    set_deterministic,
    state_on,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
PACKAGES = ("fedper", "pfedhn", "perfedavg", "fedfomo")


# -- placement ---------------------------------------------------------------------


def test_state_on_copies_every_tensor():
    state = {"w": torch.ones(2, 3), "n": torch.tensor(4)}
    moved = state_on(state, torch.device("cpu"))
    assert list(moved) == ["w", "n"]
    moved["w"] += 1
    assert torch.equal(state["w"], torch.ones(2, 3))  # no shared storage


def test_place_model_takes_the_initial_state_after_the_move():
    torch.manual_seed(0)
    model, initial = place_model(nn.Linear(3, 2), torch.device("cpu"))
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        model.weight += 1  # training must not move the initial state
    assert not torch.equal(initial["weight"], model.weight)


def test_split_cache_moves_a_split_once_and_drops_the_oldest():
    loads = []

    def loader(pid: int, name: str):
        def load():
            loads.append((pid, name))
            return torch.full((2, 1), pid), torch.tensor([pid, pid])

        return load

    cache = SplitCache(torch.device("cpu"), capacity=2)
    first = cache.get(0, "train", loader(0, "train"))
    assert cache.get(0, "train", loader(0, "train")) is first
    cache.get(1, "train", loader(1, "train"))
    cache.get(0, "train", loader(0, "train"))  # refreshes 0: 1 is now the oldest
    cache.get(2, "test", loader(2, "test"))
    cache.get(1, "train", loader(1, "train"))
    assert loads == [(0, "train"), (1, "train"), (2, "test"), (1, "train")]


# -- determinism ---------------------------------------------------------------------


def flags() -> dict:
    return {
        "cudnn.deterministic": torch.backends.cudnn.deterministic,
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
    }


def test_deterministic_sets_every_flag_and_off_restores_the_defaults(restore_flags):
    torch.backends.cudnn.benchmark = True
    set_deterministic(True)
    assert flags() == {
        "cudnn.deterministic": True,
        "cudnn.benchmark": False,
        "matmul.allow_tf32": False,
        "cudnn.allow_tf32": False,
        "deterministic_algorithms": True,
        "warn_only": True,
    }
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE == ":4096:8"
    set_deterministic(False)
    assert flags() == {  # PyTorch's defaults
        "cudnn.deterministic": False,
        "cudnn.benchmark": False,
        "matmul.allow_tf32": False,
        "cudnn.allow_tf32": True,
        "deterministic_algorithms": False,
        "warn_only": True,
    }


def test_an_existing_cublas_setting_is_kept(restore_flags, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    set_deterministic(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_the_setting_leaves_cpu_runs_alone(restore_flags):
    before = flags()
    apply_determinism(True, "cpu")
    apply_determinism(False, torch.device("cpu"))
    assert flags() == before and "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def presets(package: str) -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment" / package).glob("*.yaml"))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_preset_is_deterministic_by_default(package):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        assert to_plain(compose(package))["deterministic"] is True
        for preset in presets(package):
            config = compose(package, overrides=[f"experiment={package}/{preset}"])
            assert to_plain(config)["deterministic"] is True, preset


def test_a_non_boolean_setting_is_rejected():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = to_plain(compose("fedper", overrides=["deterministic=1"]))
    with pytest.raises(ConfigError, match="deterministic must be true or false, got 1"):
        parse_settings(config)
