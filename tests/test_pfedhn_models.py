"""pFedHN's target networks and hypernetwork: sizes and shapes."""

import pytest
import torch

from pfedhn.models import (
    CNNTarget,
    HyperNetwork,
    MLPTarget,
    build_target,
    embedding_dim,
    target_shapes,
)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_parameter_counts():
    # ALGORITHMS.md 3.2 / 3.5: 121,182 (C=10), 128,832 (C=100), MLP 79,510.
    assert count(CNNTarget(3, 32, 10)) == 121_182
    assert count(CNNTarget(3, 32, 100)) == 128_832
    assert count(MLPTarget(784, 10)) == 79_510
    assert (
        embedding_dim(50) == 13 and embedding_dim(10) == 3 and embedding_dim(100) == 26
    )


def test_cnn_flatten_sizes_and_feature_output():
    assert CNNTarget(3, 32, 10).fc1.in_features == 800  # the paper's CIFAR net
    mnist = CNNTarget(1, 28, 10)
    assert mnist.fc1.in_features == 512
    assert mnist(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    body = CNNTarget(3, 32, 10, with_head=False)
    assert body(torch.zeros(2, 3, 32, 32)).shape == (2, 84)
    assert "fc3.weight" not in body.state_dict()
    with pytest.raises(ValueError, match="too small"):
        CNNTarget(3, 8, 10)


@pytest.mark.parametrize(
    ("name", "channels", "size", "classes", "head"),
    [
        ("cnn", 3, 32, 10, True),
        ("cnn", 3, 32, 100, False),
        ("mlp", 1, 28, 10, True),
        ("mlp", 1, 28, 10, False),
    ],
)
def test_generated_tensors_load_into_the_target(name, channels, size, classes, head):
    target = build_target(name, channels, size, classes, with_head=head)
    hn = HyperNetwork(7, target_shapes(target), embed_dim=embedding_dim(7), n_hidden=1)
    weights = hn(3)
    state = target.state_dict()
    assert list(weights) == list(state)
    for key, tensor in weights.items():
        assert tensor.shape == state[key].shape
    target.load_state_dict(weights, strict=True)  # exact keys and shapes
    out = target(torch.zeros(2, channels, size, size))
    assert out.shape == (2, classes if head else target.feature_dim)


def test_hypernetwork_layout_and_size_for_cifar10_n50():
    target = CNNTarget(3, 32, 10)
    hn = HyperNetwork(
        50, target_shapes(target), embed_dim=13, hidden_dim=100, n_hidden=3
    )
    linears = [m for m in hn.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(13, 100)] + [
        (100, 100)
    ] * 3
    # One head per target tensor, each 100 -> numel; total ~12.27 M (ALGORITHMS.md 3.2).
    expected = 50 * 13 + (13 * 100 + 100) + 3 * (100 * 100 + 100)
    expected += sum(101 * p.numel() for p in target.parameters())
    assert count(hn) == expected
    assert 12.2e6 < count(hn) < 12.35e6
    # Different clients get different weights from the same phi.
    a, b = hn(0), hn(1)
    assert not torch.equal(a["fc1.weight"], b["fc1.weight"])
