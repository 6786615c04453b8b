"""Per-FedAvg's update against independent computations.

The HF Hessian-vector estimate is compared with autograd's exact product; on
a quadratic (a linear model under squared error) both the FO and the HF
meta-step are compared with their closed forms, computed in NumPy.
"""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from perfedavg.algorithm import hvp_finite_difference, meta_step
from perfedavg.models import MLP


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs.squeeze(-1) - targets) ** 2).mean()


def exact_hvp(model, params, batch, vector):
    inputs, targets = batch
    loss = nn.functional.cross_entropy(model(inputs), targets)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vector, strict=True))
    return torch.autograd.grad(dot, params)


def test_hf_estimate_approaches_autograd_hvp_as_delta_shrinks():
    torch.manual_seed(0)
    model = MLP(12, 4).double()
    params = list(model.parameters())
    batch = (torch.randn(16, 12, dtype=torch.float64), torch.randint(0, 4, (16,)))
    point = [p.detach().clone() for p in params]
    direction = [torch.randn_like(p) for p in params]
    exact = torch.cat([h.flatten() for h in exact_hvp(model, params, batch, direction)])
    errors = []
    for delta in (1e-1, 1e-2, 1e-3, 1e-4):
        estimate = hvp_finite_difference(model, params, point, direction, batch, delta)
        flat = torch.cat([h.flatten() for h in estimate])
        errors.append(float((flat - exact).norm() / exact.norm()))
        # the parameters are left where they were
        for p, w in zip(params, point, strict=True):
            assert torch.equal(p.detach(), w)
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-5, errors


def linear_model(w0: np.ndarray) -> nn.Module:
    model = nn.Linear(w0.size, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w0).view(1, -1))
    return model


@pytest.fixture
def quadratic():
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=5)
    batches = [(rng.normal(size=(8, 5)), rng.normal(size=8)) for _ in range(3)]
    return w0, batches


def grad(x, t, w):
    # f(w) = mean((X w - t)^2)  =>  grad = 2/n X^T (X w - t),  Hessian = 2/n X^T X
    return 2.0 / len(t) * x.T @ (x @ w - t)


def run_step(w0, batches, variant, alpha, beta, delta=1e-3):
    model = linear_model(w0)
    torch_batches = tuple(
        (torch.from_numpy(x), torch.from_numpy(t)) for x, t in batches
    )
    meta_step(
        model,
        torch_batches,
        alpha=alpha,
        beta=beta,
        variant=variant,
        delta=delta,
        loss_fn=mse,
    )
    return model.weight.detach().numpy().ravel()


def test_fo_step_on_a_quadratic_equals_the_hand_derived_step(quadratic):
    w0, ((x1, t1), (x2, t2), _) = quadratic
    alpha, beta = 0.1, 0.05
    w_tilde = w0 - alpha * grad(x1, t1, w0)
    expected = w0 - beta * grad(x2, t2, w_tilde)
    np.testing.assert_allclose(
        run_step(w0, quadratic[1], "fo", alpha, beta), expected, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("delta", [1e-3, 0.5])
def test_hf_step_on_a_quadratic_equals_the_exact_maml_step(quadratic, delta):
    # On a quadratic the finite difference is exact for any delta.
    w0, ((x1, t1), (x2, t2), (x3, _)) = quadratic
    alpha, beta = 0.1, 0.05
    g = grad(x2, t2, w0 - alpha * grad(x1, t1, w0))
    hessian = 2.0 / len(x3) * x3.T @ x3
    expected = w0 - beta * (g - alpha * hessian @ g)
    np.testing.assert_allclose(
        run_step(w0, quadratic[1], "hf", alpha, beta, delta),
        expected,
        rtol=1e-10,
        atol=1e-10,
    )


def test_alpha_and_beta_are_separate(quadratic):
    w0, batches = quadratic
    # beta moves the weights; alpha only shapes the direction
    assert not np.allclose(
        run_step(w0, batches, "fo", 0.1, 0.05), run_step(w0, batches, "fo", 0.05, 0.05)
    )
    np.testing.assert_allclose(run_step(w0, batches, "fo", 0.3, 0.0), w0)


def test_non_finite_loss_stops_the_step_and_restores_weights():
    from pflcore.local.training import NonFiniteLossError

    model = linear_model(np.ones(3))
    bad = (torch.full((4, 3), float("inf"), dtype=torch.float64), torch.zeros(4))
    good = (torch.ones(4, 3, dtype=torch.float64), torch.zeros(4))
    with pytest.raises(NonFiniteLossError, match="lower alpha or beta"):
        meta_step(
            model,
            (bad, good, good),
            alpha=0.1,
            beta=0.1,
            variant="fo",
            delta=1e-3,
            loss_fn=mse,
        )
    np.testing.assert_array_equal(model.weight.detach().numpy().ravel(), np.ones(3))
