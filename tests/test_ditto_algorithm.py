"""Ditto's client update against independent computations."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ditto.algorithm import add_proximal_gradient, ditto_epochs, regularized_objective
from pflcore.local.training import make_sgd, train_epochs
from pflcore.local.transforms import BatchTransform

DEVICE = torch.device("cpu")
TRANSFORM = BatchTransform(mean=(0.5,), std=(0.25,), crop_padding=1, flip=True)


def _data(n: int = 23) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    return x, torch.randint(0, 3, (n,), generator=g)


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.Tanh(), nn.Linear(5, 3))


def _ditto(global_model, personal_model, lam, lr=0.1, epochs=2, seed=7, momentum=0.0):
    x, y = _data()
    return ditto_epochs(
        global_model,
        personal_model,
        x,
        y,
        TRANSFORM,
        global_optimizer=make_sgd(global_model.parameters(), lr, momentum),
        personal_optimizer=make_sgd(personal_model.parameters(), lr, momentum),
        lam=lam,
        epochs=epochs,
        batch_size=5,
        generator=torch.Generator().manual_seed(seed),
        device=DEVICE,
    )


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_proximal_gradient_is_the_autograd_gradient_of_the_regularised_objective():
    v, w = _model(0), _model(1)
    x, y = _data()
    inputs, lam = TRANSFORM(x, train=False), 0.7
    # independent: autograd through F(v) + lam/2 * sum of squared differences
    objective = nn.functional.cross_entropy(v(inputs), y)
    for p, q in zip(v.parameters(), w.parameters(), strict=True):
        objective = objective + lam / 2 * ((p - q.detach()) ** 2).sum()
    expected = torch.autograd.grad(objective, list(v.parameters()))
    v.zero_grad()
    nn.functional.cross_entropy(v(inputs), y).backward()
    add_proximal_gradient(
        list(v.parameters()), [p.detach() for p in w.parameters()], lam
    )
    for got, want in zip((p.grad for p in v.parameters()), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_regularised_objective_value_by_hand():
    v = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    w = [torch.tensor([0.0, 4.0]), torch.tensor([[1.0]])]
    # 0.5 + 0.5 * 2 * (1 + 4 + 4) = 9.5
    assert float(regularized_objective(torch.tensor(0.5), v, w, 2.0)) == pytest.approx(
        9.5
    )


def test_lambda_zero_trains_the_personal_model_as_local_sgd():
    start = _model(0)
    g, v = copy.deepcopy(start), _model(1)
    local = copy.deepcopy(v)
    _ditto(g, v, lam=0.0, momentum=0.9)
    x, y = _data()
    train_epochs(
        local,
        x,
        y,
        make_sgd(local.parameters(), 0.1, 0.9),
        TRANSFORM,
        epochs=2,
        batch_size=5,
        generator=torch.Generator().manual_seed(7),
        device=DEVICE,
    )
    assert torch.equal(_flat(v), _flat(local))


def test_global_copy_follows_fedavg_local_update_bit_for_bit():
    start = _model(0)
    g, fedavg = copy.deepcopy(start), copy.deepcopy(start)
    _ditto(g, _model(1), lam=0.5, momentum=0.9)
    x, y = _data()
    train_epochs(
        fedavg,
        x,
        y,
        make_sgd(fedavg.parameters(), 0.1, 0.9),
        TRANSFORM,
        epochs=2,
        batch_size=5,
        generator=torch.Generator().manual_seed(7),
        device=DEVICE,
    )
    assert torch.equal(_flat(g), _flat(fedavg))


def test_lambda_equal_to_one_over_lr_lands_one_gradient_step_from_w():
    # plain SGD, lam = 1/lr: v' = v - lr (g + (v - w)/lr) = w - lr * g(v), by hand
    lr = 0.1
    w, v = _model(0), _model(1)
    reference = _flat(w)
    x, y = _data(5)  # one batch, one epoch: exactly one step
    inputs = TRANSFORM(x, train=False)
    v_copy = copy.deepcopy(v)
    grad = torch.autograd.grad(
        nn.functional.cross_entropy(v_copy(inputs), y), list(v_copy.parameters())
    )
    expected = reference - lr * torch.cat([g.flatten() for g in grad])
    no_aug = BatchTransform(mean=(0.5,), std=(0.25,))
    ditto_epochs(
        w,
        v,
        x,
        y,
        no_aug,
        global_optimizer=make_sgd(w.parameters(), lr),
        personal_optimizer=make_sgd(v.parameters(), lr),
        lam=1 / lr,
        epochs=1,
        batch_size=5,
        generator=torch.Generator().manual_seed(0),
        device=DEVICE,
    )
    torch.testing.assert_close(_flat(v), expected)


def test_larger_lambda_pulls_the_personal_model_closer_to_the_global_one():
    distances = []
    for lam in (0.0, 1.0, 5.0, 9.0):
        g, v = _model(0), _model(1)
        received = _flat(g)
        _ditto(g, v, lam=lam)
        distances.append(float((_flat(v) - received).norm()))
    assert distances == sorted(distances, reverse=True)
    assert distances[-1] < 0.5 * distances[0]
