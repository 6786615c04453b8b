"""FedFomo's client-side update against hand-worked examples."""

import math

import numpy as np
import pytest
import torch

from fedfomo.algorithm import (
    fomo_update,
    fomo_weights,
    model_distance,
    normalized_positive,
    round_lr,
)
from fedfomo.models import TFCNN, build_model


def state(w, b):
    return {
        "w": torch.tensor(w, dtype=torch.float32),
        "b": torch.tensor(b, dtype=torch.float32),
        "steps": torch.tensor(7, dtype=torch.int64),
    }


BASE = state([0.0, 0.0], [0.0])
C1 = state([1.0, 1.0], [0.0])  # L1 2, L2 sqrt(2)
C2 = state([0.0, -1.0], [0.0])  # L1 1, L2 1
C3 = state([2.0, 2.0], [0.0])  # L1 4, L2 sqrt(8)
C4 = state([1.0, 2.0], [2.0])  # L1 5, L2 3, L2^2 9
CANDS = [C1, C2, C3, C4]
BASE_LOSS = 1.0
LOSSES = np.array([0.5, 0.8, 1.2, 0.5])


@pytest.mark.parametrize(
    ("norm", "expected"),
    [
        ("l1", [2.0, 1.0, 4.0, 5.0]),
        ("l2", [math.sqrt(2), 1.0, math.sqrt(8), 3.0]),
        ("l2_squared", [2.0, 1.0, 8.0, 9.0]),
    ],
)
def test_distances_by_hand(norm, expected):
    got = [model_distance(c, BASE, norm) for c in CANDS]
    assert got == pytest.approx(expected)


def test_weights_and_update_on_a_hand_worked_example():
    dist = np.array([model_distance(c, BASE, "l1") for c in CANDS])
    w = fomo_weights(BASE_LOSS, LOSSES, dist)
    # (1 - 0.5)/2, (1 - 0.8)/1, (1 - 1.2)/4, (1 - 0.5)/5
    np.testing.assert_allclose(w, [0.25, 0.2, -0.05, 0.1])
    np.testing.assert_allclose(normalized_positive(w), [5 / 11, 4 / 11, 0, 2 / 11])
    new = fomo_update(BASE, CANDS, w)
    # 5/11 [1, 1 | 0] + 4/11 [0, -1 | 0] + 2/11 [1, 2 | 2]
    np.testing.assert_allclose(new["w"].numpy(), [7 / 11, 5 / 11], rtol=1e-6)
    np.testing.assert_allclose(new["b"].numpy(), [4 / 11], rtol=1e-6)
    assert new["w"].dtype == torch.float32
    assert int(new["steps"]) == 7  # non-floating tensors stay the baseline's


def test_update_from_a_nonzero_baseline_is_the_convex_combination():
    base = state([1.0, -1.0], [3.0])
    w = np.array([0.3, 0.1, -2.0, 0.0])
    new = fomo_update(base, CANDS, w)
    # theta_b + sum s_n (theta_n - theta_b) = sum s_n theta_n when sum s_n = 1
    np.testing.assert_allclose(new["w"].numpy(), [0.75 * 1 + 0.25 * 0, 0.75 - 0.25])
    np.testing.assert_allclose(new["b"].numpy(), [0.0], atol=1e-6)


def test_all_negative_improvements_keep_the_baseline():
    w = fomo_weights(BASE_LOSS, np.array([1.5, 1.1, 2.0, 1.0]), np.ones(4))
    assert (w <= 0).all()
    assert normalized_positive(w).sum() == 0
    base = state([0.5, -0.25], [1.0])
    new = fomo_update(base, CANDS, w)
    for key in base:
        assert torch.equal(new[key], base[key])
        assert new[key] is not base[key]


def test_tied_candidates_share_equally():
    twin = state([-1.0, -1.0], [0.0])  # same distance and loss as C1
    dist = [model_distance(c, BASE, "l1") for c in (C1, twin)]
    w = fomo_weights(BASE_LOSS, np.array([0.5, 0.5]), np.array(dist))
    assert w[0] == w[1] == pytest.approx(0.25)
    np.testing.assert_allclose(normalized_positive(w), [0.5, 0.5])
    new = fomo_update(BASE, [C1, twin], w)
    np.testing.assert_allclose(new["w"].numpy(), [0.0, 0.0], atol=1e-7)


def test_identical_candidate_gets_zero_weight_not_infinity():
    w = fomo_weights(0.7, np.array([0.7]), np.array([model_distance(BASE, BASE)]))
    assert w.tolist() == [0.0]


def test_unknown_norm_is_rejected():
    with pytest.raises(ValueError, match="norm must be one of"):
        model_distance(BASE, BASE, "linf")


def test_tf_cnn_has_the_papers_parameter_count():
    # conv 3*32*9+32, 32*64*9+64, 64*64*9+64; fc 1024*64+64, 64*10+10
    expected = 896 + 18496 + 36928 + 65600 + 650
    assert expected == 122_570
    assert sum(p.numel() for p in TFCNN(10).parameters()) == expected
    assert TFCNN(10)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 22 px"):
        TFCNN(10, 1, 16)


def test_common_initialisation_depends_only_on_the_seed():
    a, b = build_model(3, 10, 3, 32), build_model(3, 10, 3, 32)
    for (ka, va), (kb, vb) in zip(
        a.state_dict().items(), b.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(
        build_model(4, 10, 3, 32).state_dict()["features.0.weight"],
        a.state_dict()["features.0.weight"],
    )


def test_learning_rate_decays_per_round_to_a_floor():
    decay = {"lr_decay": 0.99, "lr_min": 1e-4}
    assert round_lr(0.1, 1, **decay) == pytest.approx(0.1)
    assert round_lr(0.1, 3, **decay) == pytest.approx(0.1 * 0.99**2)
    assert round_lr(0.1, 2000, **decay) == pytest.approx(1e-4)
    assert round_lr(0.05, 9) == pytest.approx(0.05)
