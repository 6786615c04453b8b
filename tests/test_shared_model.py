"""The shared protocol's network: pFedHN's CIFAR CNN, buildable by every package."""

from __future__ import annotations

import pytest
import torch

from fedfomo.models import build_model as fedfomo_model
from fedper.models import build_model as fedper_model
from fedper.models import linearize_base, personal_keys
from perfedavg.models import build_model as perfedavg_model
from pfedhn.models import CNNTarget
from pflcore.local.models import LeNet


def test_lenet_is_pfedhns_cnn_parameter_for_parameter():
    torch.manual_seed(7)
    ours = LeNet(10)
    torch.manual_seed(7)
    theirs = CNNTarget(3, 32, 10)
    mine = list(ours.parameters())
    paper = list(theirs.parameters())
    assert [p.shape for p in mine] == [p.shape for p in paper]
    assert all(torch.equal(a, b) for a, b in zip(mine, paper, strict=True))
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(ours(x), theirs(x))
    assert sum(p.numel() for p in mine) == 121_182  # 1216+12832+96120+10164+850


def test_fedpers_one_personal_unit_is_the_last_linear_layer():
    model = fedper_model("lenet", 10, 3, image_size=32)
    keys = personal_keys(model, "fedper", 1, "aggregate")
    assert sorted(keys) == ["classifier.bias", "classifier.weight"]
    with pytest.raises(ValueError, match="does not apply to model=lenet"):
        linearize_base(model, 1, 3, 32)


@pytest.mark.parametrize(
    "build",
    [
        lambda: fedper_model("lenet", 10, 3, image_size=32),
        lambda: perfedavg_model("lenet", 10, 3, 32),
        lambda: fedfomo_model(0, 10, 3, 32, "lenet"),
    ],
)
def test_every_package_builds_it(build):
    model = build()
    assert isinstance(model, LeNet)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_a_side_too_small_is_named():
    with pytest.raises(ValueError, match="at least 16 px"):
        LeNet(10, 3, 12)
