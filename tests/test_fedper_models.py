"""FedPer's networks: the split computes the same function, K_P counts units."""

import pytest
import torch

from fedper.models import (
    MobileNetV1,
    ResNet34,
    build_model,
    keys_of,
    personal_keys,
    split_model,
)


@pytest.fixture(scope="module")
def mobilenet() -> MobileNetV1:
    torch.manual_seed(0)
    return MobileNetV1(num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet() -> ResNet34:
    torch.manual_seed(0)
    return ResNet34(num_classes=10).eval()


def test_parameter_counts_match_the_published_networks(mobilenet, resnet):
    # MobileNet-v1 (1.0, 1000 classes) has 4.23 M parameters, of which 1,025,000 in
    # the classifier; with 10 classes: 4,231,976 - 1,025,000 + 10,250.
    assert (
        sum(p.numel() for p in mobilenet.parameters()) == 4_231_976 - 1_025_000 + 10_250
    )
    # ResNet-34 has 21,797,672 parameters with 1000 classes (fc 513,000).
    assert sum(p.numel() for p in resnet.parameters()) == 21_797_672 - 513_000 + 5_130
    assert len(mobilenet.units()) == 13 + 2 and len(resnet.units()) == 16 + 2


# MobileNet-v1 as published (Howard et al. 2017, Table 1), typed from the paper:
# (in, out, stride) of each depthwise-separable block.
PUBLISHED_MOBILENET = [
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    *[(512, 512, 1)] * 5,
    (512, 1024, 2),
    (1024, 1024, 1),
]


def test_mobilenet_blocks_follow_the_published_table(mobilenet):
    assert mobilenet.stem[0].stride == (2, 2) and mobilenet.stem[0].out_channels == 32
    for block, (cin, cout, stride) in zip(
        mobilenet.blocks, PUBLISHED_MOBILENET, strict=True
    ):
        depthwise, pointwise = block[0], block[3]
        assert depthwise.groups == depthwise.in_channels == cin
        assert depthwise.kernel_size == (3, 3) and depthwise.stride == (stride, stride)
        assert (pointwise.in_channels, pointwise.out_channels) == (cin, cout)
        assert pointwise.kernel_size == (1, 1)
        assert isinstance(block[1], torch.nn.BatchNorm2d) and isinstance(
            block[5], torch.nn.ReLU
        )


def test_mobilenet_forward_equals_a_hand_built_sequential(mobilenet):
    """The network equals torch.nn.Sequential of its layers in the published order."""
    layers = [*mobilenet.stem]
    for block in mobilenet.blocks:
        layers += list(block)
    layers += [
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        mobilenet.classifier[2],
    ]
    reference = torch.nn.Sequential(*layers).eval()
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(mobilenet(x), reference(x), rtol=0, atol=0)


def test_paper_block_count_variant_has_eleven_blocks():
    model = MobileNetV1(num_classes=10, num_blocks=11)
    assert len(model.blocks) == 11
    # Its last four units equal the standard network's: K_P <= 4 is unaffected.
    standard = MobileNetV1(num_classes=10)
    for a, b in zip(model.units()[-4:], standard.units()[-4:], strict=True):
        assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


@pytest.mark.parametrize("name", ["mobilenet", "resnet"])
@pytest.mark.parametrize("head_units", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("size", [32, 64])
def test_split_forward_equals_unsplit_forward(request, name, head_units, size):
    model = request.getfixturevalue(name)
    base, head = split_model(model, head_units)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(head(base(x)), model(x), rtol=0, atol=0)


def test_personal_keys_count_units_from_the_output(mobilenet, resnet):
    assert personal_keys(mobilenet, "fedper", 1, "aggregate") == [
        "classifier.2.weight",
        "classifier.2.bias",
    ]
    k2 = personal_keys(mobilenet, "fedper", 2, "aggregate")
    assert {k.split(".")[1] for k in k2 if k.startswith("blocks.")} == {"12"}
    k4 = personal_keys(mobilenet, "fedper", 4, "aggregate")
    assert {k.split(".")[1] for k in k4 if k.startswith("blocks.")} == {
        "10",
        "11",
        "12",
    }
    assert personal_keys(resnet, "fedper", 1, "aggregate") == [
        "net.fc.weight",
        "net.fc.bias",
    ]
    r2 = personal_keys(resnet, "fedper", 2, "aggregate")
    assert set(r2) - {"net.fc.weight", "net.fc.bias"} == {
        k for k in resnet.state_dict() if k.startswith("net.layer4.2.")
    }
    r4 = personal_keys(resnet, "fedper", 4, "aggregate")
    assert {k for k in r4 if k != "net.fc.weight" and k != "net.fc.bias"} == {
        k for k in resnet.state_dict() if k.startswith("net.layer4.")
    }


def test_fedavg_shares_everything_and_local_nothing(mobilenet):
    assert personal_keys(mobilenet, "fedavg", 2, "aggregate") == []
    assert personal_keys(mobilenet, "local", 2, "aggregate") == list(
        mobilenet.state_dict()
    )


def test_local_base_buffers_keeps_batchnorm_statistics_personal(mobilenet):
    keys = set(personal_keys(mobilenet, "fedper", 1, "local"))
    buffers = {
        k for k in mobilenet.state_dict() if "running_" in k or "num_batches" in k
    }
    assert buffers <= keys
    assert not any(k.endswith(".weight") and k.startswith("blocks.0") for k in keys)


def test_keys_of_matches_module_prefix(mobilenet):
    assert keys_of(mobilenet, mobilenet.classifier) == [
        "classifier.2.weight",
        "classifier.2.bias",
    ]


def test_bad_settings_are_rejected(mobilenet):
    with pytest.raises(ValueError, match="num_head_layers"):
        split_model(mobilenet, 15)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg", 10, 3)
    with pytest.raises(ValueError, match="13"):
        MobileNetV1(10, num_blocks=12)


def test_grayscale_input_is_supported():
    for name in ("mobilenet_v1", "resnet34"):
        model = build_model(name, 10, 1).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# --------------------------------------------------------------------------
# Sec. 4.4 ablation: the base replaced by one linear map
# --------------------------------------------------------------------------

from fedper.models import LinearBase, find_linear_base, linearize_base  # noqa: E402

CLASSIFIER_WIDTH = {"mobilenet_v1": 1024, "resnet34": 512}


def _pair(name: str, head_units: int, size: int = 32):
    torch.manual_seed(0)
    full = build_model(name, 10, 3).eval()
    linear = build_model(name, 10, 3)
    linearize_base(linear, head_units, 3, size)
    return full, linear.eval()


@pytest.mark.parametrize("name", ["mobilenet_v1", "resnet34"])
@pytest.mark.parametrize("head_units", [1, 2, 3, 4])
def test_linear_base_keeps_the_personal_part_exactly(name, head_units):
    full, linear = _pair(name, head_units)
    keys = personal_keys(full, "fedper", head_units, "aggregate")
    assert personal_keys(linear, "fedper", head_units, "aggregate") == keys
    full_state, linear_state = full.state_dict(), linear.state_dict()
    assert [linear_state[k].shape for k in keys] == [full_state[k].shape for k in keys]
    full_head, linear_head = (
        split_model(full, head_units)[1],
        split_model(linear, head_units)[1],
    )
    assert [type(m) for m in linear_head.modules()] == [
        type(m) for m in full_head.modules()
    ]
    # The base holds the linear map's weight and nothing else.
    base_keys = [k for k in linear_state if k not in keys]
    assert len(base_keys) == 1 and base_keys[0].endswith("map.weight")


@pytest.mark.parametrize("name", ["mobilenet_v1", "resnet34"])
@pytest.mark.parametrize("head_units", [1, 2, 3, 4])
def test_linear_base_is_linear_and_feeds_the_head_its_usual_shape(name, head_units):
    full, linear = _pair(name, head_units)
    full_base, _ = split_model(full, head_units)
    base, _ = split_model(linear, head_units)
    gen = torch.Generator().manual_seed(3)
    x, y = (
        torch.randn(2, 3, 32, 32, generator=gen),
        torch.randn(2, 3, 32, 32, generator=gen),
    )
    a, b = 1.7, -0.6
    with torch.no_grad():
        double, xd, yd = base.double(), x.double(), y.double()
        torch.testing.assert_close(
            double(a * xd + b * yd),
            a * double(xd) + b * double(yd),
            rtol=1e-10,
            atol=1e-10,
        )
        base.float()
        out = base(x)
        if head_units == 1:  # a dense map to the classifier's input width
            assert out.shape == (2, CLASSIFIER_WIDTH[name], 1, 1)
        else:  # exactly what the first personal block receives in the full network
            assert out.shape == full_base(x).shape
        assert linear(x).shape == (2, 10)
    map_ = find_linear_base(linear)
    assert isinstance(map_, LinearBase) and find_linear_base(full) is None
    described = map_.describe()
    assert described["form"] == ("dense" if head_units == 1 else "conv")
    assert described["parameters"] == sum(p.numel() for p in base.parameters())
    if head_units > 1:  # no padding at 32 px: kernel = stride = 32 / output side
        side = out.shape[-1]
        assert described["kernel_stride"] == [32 // side] * 2
        assert described["padding"] == [0, 0]


def test_linear_base_trains_through_the_personal_part():
    _, linear = _pair("mobilenet_v1", 2)
    linear.train()
    loss = linear(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in linear.parameters())


def test_linear_base_pads_to_the_exact_shape_at_odd_sizes():
    # At 40 px the base's stride-2 convolutions round up: the map pads to match.
    for name, head_units in (("mobilenet_v1", 3), ("resnet34", 4)):
        full, linear = _pair(name, head_units, size=40)
        x = torch.randn(2, 3, 40, 40)
        with torch.no_grad():
            assert (
                split_model(linear, head_units)[0](x).shape
                == split_model(full, head_units)[0](x).shape
            )
