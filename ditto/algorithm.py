"""Ditto's client update as pure functions (no Flower import).

Li, Hu, Beirami, Smith, *Ditto: Fair and Robust Federated Learning Through
Personalization*, ICML 2021 (arXiv:2012.04221), Algorithm 1. A selected
client k receives the global model w^t and, on the same minibatches,

- trains a copy of w^t with the local solver (plain SGD, as FedAvg) and
  uploads it; the server averages the uploads;
- takes steps on its personal model v_k against the regularised objective

      h_k(v_k; w^t) = F_k(v_k) + (lambda / 2) * ||v_k - w^t||^2,

  whose gradient is grad F_k(v_k) + lambda * (v_k - w^t), with w^t held
  fixed at what the client received.

The personal model is what the client is evaluated with. As in the authors' code
(``flearn/trainers_MTL/ditto.py``), each minibatch first updates v_k and then the global
copy, both on the same (augmented) batch; v_k starts from the run's initial weights and
changes only in rounds where the client is selected. Here both updates use the run's SGD
settings (learning rate, momentum, weight decay); the authors use plain SGD with one
learning rate. Because the personal step draws no random numbers, the global copy
follows exactly the trajectory FedAvg's local update would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pflcore.local.batching import epoch_plan
from pflcore.local.training import NonFiniteLossError
from pflcore.local.transforms import BatchTransform


def regularized_objective(
    loss: torch.Tensor,
    personal: Sequence[torch.Tensor],
    reference: Sequence[torch.Tensor],
    lam: float,
) -> torch.Tensor:
    """h_k = F_k(v) + (lam / 2) * ||v - w||^2 for one minibatch loss F_k(v)."""
    penalty = sum(
        ((v - w) ** 2).sum() for v, w in zip(personal, reference, strict=True)
    )
    return loss + 0.5 * lam * penalty


@torch.no_grad()
def add_proximal_gradient(
    personal: Sequence[nn.Parameter], reference: Sequence[torch.Tensor], lam: float
) -> None:
    """Turn each ``v.grad`` = grad F_k(v) into grad F_k(v) + lam * (v - w)."""
    for v, w in zip(personal, reference, strict=True):
        if v.grad is not None:
            v.grad.add_(v.detach() - w, alpha=lam)


@dataclass(frozen=True)
class DittoStats:
    """Mean training losses and steps of one client update.

    Attributes
    ----------
    global_loss : float
        Sample-weighted mean loss of the global copy (what FedAvg reports).
    personal_loss : float
        Sample-weighted mean F_k(v_k) before each personal step (the
        regulariser excluded).
    num_samples, num_steps : int
        Samples processed and minibatch steps (of each model).
    """

    global_loss: float
    personal_loss: float
    num_samples: int
    num_steps: int


def ditto_epochs(
    global_model: nn.Module,
    personal_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    transform: BatchTransform,
    *,
    global_optimizer: torch.optim.Optimizer,
    personal_optimizer: torch.optim.Optimizer,
    lam: float,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> DittoStats:
    """Ditto's local update: both models, minibatch by minibatch.

    Parameters
    ----------
    global_model : torch.nn.Module
        Loaded with the received w^t; trained in place by
        ``global_optimizer`` (the upload).
    personal_model : torch.nn.Module
        Loaded with the client's v_k; trained in place by
        ``personal_optimizer`` against ``h_k(.; w^t)``.
    x, y : torch.Tensor
        The client's uint8 training images and labels.
    transform : BatchTransform
        Normalisation and augmentation (drawn once per batch, shared).
    global_optimizer, personal_optimizer : torch.optim.Optimizer
        Optimizers over each model's parameters.
    lam : float
        Ditto's lambda (0: the personal model trains as Local does).
    epochs, batch_size : int
        Passes over the data and minibatch size.
    generator : torch.Generator
        CPU generator for shuffles and augmentations, drawn as
        :func:`pflcore.local.training.train_epochs` draws them.
    device : torch.device
        Training device.

    Returns
    -------
    DittoStats
        The two models' mean losses, samples and steps.

    Raises
    ------
    NonFiniteLossError
        If either model's loss becomes NaN or infinite.
    """
    reference = [p.detach().clone() for p in global_model.parameters()]
    personal_params = list(personal_model.parameters())
    global_model.train()
    personal_model.train()
    x, y = x.to(device), y.to(device)
    plan = epoch_plan(x.shape[0], epochs, batch_size, transform, generator).to(device)
    losses = torch.zeros(2, device=device)
    steps = samples = 0
    for idx, draws in plan:
        inputs, targets = transform.apply(x[idx], draws), y[idx]
        personal_loss = nn.functional.cross_entropy(personal_model(inputs), targets)
        personal_optimizer.zero_grad(set_to_none=True)
        personal_loss.backward()
        add_proximal_gradient(personal_params, reference, lam)
        personal_optimizer.step()
        global_loss = nn.functional.cross_entropy(global_model(inputs), targets)
        global_optimizer.zero_grad(set_to_none=True)
        global_loss.backward()
        global_optimizer.step()
        losses += (
            torch.stack([global_loss.detach(), personal_loss.detach()]) * idx.numel()
        )
        steps += 1
        samples += idx.numel()
    mean = [float(v) / samples if samples else 0.0 for v in losses.cpu()]
    if not all(math.isfinite(v) for v in mean):
        raise NonFiniteLossError(
            f"training loss became {mean} (global, personal) after {steps} steps; "
            "lower the learning rate or lambda, or check the data"
        )
    return DittoStats(mean[0], mean[1], samples, steps)
