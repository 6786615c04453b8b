"""The quick-start's small CNN: its size, its function, and its FedPer split."""

import pytest
import torch
from torch import nn

from fedper.models import (
    SmallCNN,
    build_model,
    find_linear_base,
    linearize_base,
    personal_keys,
    split_model,
)


@pytest.fixture
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(num_classes=10, in_channels=1).eval()


def test_parameter_count_by_hand(cnn):
    stem = 1 * 32 * 9 + 32
    block1 = 32 * 64 * 9 + 64
    block2 = 64 * 64 * 9 + 64
    fc = 64 * 10 + 10
    assert sum(p.numel() for p in cnn.parameters()) == stem + block1 + block2 + fc
    assert isinstance(build_model("small_cnn", 10, 1), SmallCNN)


def test_forward_equals_a_hand_written_network(cnn):
    x = torch.randn(5, 1, 8, 8)
    conv1, conv2, conv3 = cnn.stem[0], cnn.blocks[0][0], cnn.blocks[1][0]
    h = torch.relu(conv1(x))
    h = nn.functional.max_pool2d(torch.relu(conv2(h)), 2)  # 8 -> 4 px
    h = nn.functional.max_pool2d(torch.relu(conv3(h)), 2)  # 4 -> 2 px
    logits = cnn.classifier[2](h.mean(dim=(2, 3)))
    assert torch.allclose(cnn(x), logits, atol=1e-6)
    base, head = split_model(cnn, 2)
    assert torch.allclose(head(base(x)), logits, atol=1e-6)


def test_personal_keys_count_units_from_the_output(cnn):
    fc = ["classifier.2.weight", "classifier.2.bias"]
    assert personal_keys(cnn, "fedper", 1, "aggregate") == fc
    assert personal_keys(cnn, "fedper", 2, "aggregate") == [
        "blocks.1.0.weight",
        "blocks.1.0.bias",
        *fc,
    ]
    assert personal_keys(cnn, "fedavg", 2, "aggregate") == []
    assert personal_keys(cnn, "local", 2, "aggregate") == list(cnn.state_dict())


def test_linear_base_feeds_the_last_block_its_usual_input(cnn):
    head_keys = personal_keys(cnn, "fedper", 2, "aggregate")
    before = {k: v.clone() for k, v in cnn.state_dict().items() if k in head_keys}
    linear = linearize_base(cnn, 2, in_channels=1, image_size=8)
    assert find_linear_base(cnn) is linear
    assert linear.out_shape == (64, 4, 4) and linear.kernel == (2, 2)
    after = cnn.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert cnn(torch.randn(3, 1, 8, 8)).shape == (3, 10)
