"""Per-FedAvg's maths as pure functions (no Flower import).

Fallah, Mokhtari, Ozdaglar, *Personalized Federated Learning with Theoretical
Guarantees: A Model-Agnostic Meta-Learning Approach*, NeurIPS 2020. From the
received w_0 = w_k a client takes ``local_steps`` (tau) meta-steps; step t
draws three independent batches D, D', D'' of its training split and computes

    w~  = w_{t-1} - alpha * grad f(w_{t-1}; D)
    g   = grad f(w~; D')
    FO: w_t = w_{t-1} - beta * g
    HF: h   = [grad f(w_{t-1} + delta g; D'')
               - grad f(w_{t-1} - delta g; D'')] / (2 delta)
        w_t = w_{t-1} - beta * (g - alpha * h)

(:func:`meta_step`, :func:`perfedavg_update`). The server's Adam step (Jiang
et al.'s Reptile stage, ``jiang.reptile.optimizer=server_adam``) is
:func:`adam_step`. The tests check the meta-step against autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pflcore.local.batching import step_plan
from pflcore.local.training import NonFiniteLossError, TrainStats
from pflcore.local.transforms import BatchTransform

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# -- Per-FedAvg's meta-step (plain PyTorch) -----------------------------------


def loss_and_grad(
    model: nn.Module,
    params: Sequence[torch.Tensor],
    batch: Batch,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss (cross-entropy by default) on ``batch``, detached, and its gradient.

    The loss stays on the model's device (no host sync).
    """
    inputs, targets = batch
    loss = loss_fn(model(inputs), targets)
    grads = torch.autograd.grad(loss, list(params))
    return loss.detach(), [g.detach() for g in grads]


@torch.no_grad()
def assign(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
    """Overwrite the parameters in place."""
    for p, v in zip(params, values, strict=True):
        p.copy_(v)


def hvp_finite_difference(
    model: nn.Module,
    params: Sequence[torch.Tensor],
    point: Sequence[torch.Tensor],
    direction: Sequence[torch.Tensor],
    batch: Batch,
    delta: float,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> list[torch.Tensor]:
    """Per-FedAvg HF's estimate of Hessian(point) @ direction on ``batch``.

    ``[grad f(point + delta v) - grad f(point - delta v)] / (2 delta)``; the
    parameters are left at ``point``.
    """
    assign(params, [w + delta * v for w, v in zip(point, direction, strict=True)])
    _, plus = loss_and_grad(model, params, batch, loss_fn)
    assign(params, [w - delta * v for w, v in zip(point, direction, strict=True)])
    _, minus = loss_and_grad(model, params, batch, loss_fn)
    assign(params, point)
    return [(a - b) / (2 * delta) for a, b in zip(plus, minus, strict=True)]


def meta_step_on_device(
    model: nn.Module,
    batches: tuple[Batch, Batch, Batch],
    *,
    alpha: float,
    beta: float,
    variant: str,
    delta: float,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`meta_step` without its host sync: the losses stay on the device.

    Returns
    -------
    loss, adapted_loss : torch.Tensor
        The loss at w_{t-1} on D and at w~ on D'; the caller checks that they
        are finite (the weights are not finite if they are not).
    """
    if variant not in ("fo", "hf"):
        raise ValueError(f"unknown Per-FedAvg variant {variant!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    loss, grad_d = loss_and_grad(model, params, batches[0], loss_fn)
    assign(params, [w - alpha * g for w, g in zip(start, grad_d, strict=True)])
    adapted_loss, g = loss_and_grad(model, params, batches[1], loss_fn)
    if variant == "hf":
        h = hvp_finite_difference(model, params, start, g, batches[2], delta, loss_fn)
        g = [gi - alpha * hi for gi, hi in zip(g, h, strict=True)]
    assign(params, [w - beta * gi for w, gi in zip(start, g, strict=True)])
    return loss, adapted_loss


def _non_finite(loss: float, adapted_loss: float) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"Per-FedAvg loss became {loss} (adapted: {adapted_loss}); lower alpha or beta"
    )


def meta_step(
    model: nn.Module,
    batches: tuple[Batch, Batch, Batch],
    *,
    alpha: float,
    beta: float,
    variant: str,
    delta: float,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> float:
    """One Per-FedAvg step on the three batches (D, D', D''), in place.

    Parameters
    ----------
    model : torch.nn.Module
        The model; its parameters hold w_{t-1} and end holding w_t.
    batches : tuple
        Normalised ``(inputs, targets)`` batches D, D' and D'' (D'' is used
        by HF only).
    alpha, beta : float
        Inner (adaptation) and outer (meta) step sizes.
    variant : str
        ``"fo"`` or ``"hf"``.
    delta : float
        HF's finite-difference step.
    loss_fn : callable
        ``loss_fn(outputs, targets)``; cross-entropy in the papers.

    Returns
    -------
    float
        The loss at w_{t-1} on D.

    Raises
    ------
    NonFiniteLossError
        If a loss is not finite; the weights are then restored to w_{t-1}.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    losses = meta_step_on_device(
        model,
        batches,
        alpha=alpha,
        beta=beta,
        variant=variant,
        delta=delta,
        loss_fn=loss_fn,
    )
    loss, adapted_loss = torch.stack(losses).cpu().tolist()
    if not (math.isfinite(loss) and math.isfinite(adapted_loss)):
        assign(params, start)
        raise _non_finite(loss, adapted_loss)
    return loss


def perfedavg_update(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    transform: BatchTransform,
    *,
    steps: int,
    batch_size: int,
    alpha: float,
    beta: float,
    variant: str,
    delta: float,
    generator: torch.Generator,
    device: torch.device,
) -> TrainStats:
    """``steps`` Per-FedAvg meta-steps, each on three freshly drawn batches.

    The batches and their augmentations are drawn before the first step (in
    the order a per-step loop draws them) and moved to ``device`` in one copy;
    the losses are read from the device once, after the last step.

    Raises
    ------
    NonFiniteLossError
        If a step's loss was not finite (the weights are then not finite).
    """
    model.train()
    x, y = x.to(device), y.to(device)
    plan = step_plan(x.shape[0], 3 * steps, batch_size, generator, transform)
    plan = plan.to(device)
    losses: list[torch.Tensor] = []
    for step in range(steps):
        batches = []
        for i in range(3 * step, 3 * step + 3):
            idx, draws = plan.batch(i)
            batches.append((transform.apply(x[idx], draws), y[idx]))
        losses.extend(
            meta_step_on_device(
                model,
                (batches[0], batches[1], batches[2]),
                alpha=alpha,
                beta=beta,
                variant=variant,
                delta=delta,
            )
        )
    values = torch.stack(losses).cpu().tolist() if losses else []  # the one host sync
    total = 0.0
    for loss, adapted_loss in zip(values[::2], values[1::2], strict=True):
        if not (math.isfinite(loss) and math.isfinite(adapted_loss)):
            raise _non_finite(loss, adapted_loss)
        total += loss
    return TrainStats(total / steps, 3 * steps * batch_size, steps)


# -- the server's Adam step ---------------------------------------------------------


def adam_step(
    param: np.ndarray,
    grad: np.ndarray,
    moments: tuple[np.ndarray, np.ndarray],
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float = 1e-8,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One Adam step (Kingma & Ba) on ``param`` along ``grad``, in float64.

    Parameters
    ----------
    param, grad : numpy.ndarray
        The parameter and its (pseudo-)gradient.
    moments : tuple of numpy.ndarray
        First and second moment estimates before this step.
    step : int
        This step's number, from 1 (for the bias corrections).
    lr : float
        Step size.
    betas : tuple of float
        Decay rates of the two moments.
    eps : float
        Added to the denominator.

    Returns
    -------
    new_param : numpy.ndarray
        ``param - lr * m_hat / (sqrt(v_hat) + eps)``.
    moments : tuple of numpy.ndarray
        The updated moments.
    """
    b1, b2 = betas
    m = b1 * moments[0] + (1 - b1) * grad
    v = b2 * moments[1] + (1 - b2) * grad * grad
    m_hat = m / (1 - b1**step)
    v_hat = v / (1 - b2**step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), (m, v)
