"""SGD loops and evaluation over in-memory tensors."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pflcore.local.batching import epoch_plan
from pflcore.local.transforms import BatchTransform


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass(frozen=True)
class TrainStats:
    """What a training call did.

    Attributes
    ----------
    loss : float
        Sample-weighted mean training loss over all steps.
    num_samples : int
        Samples processed (epochs x dataset size, less any one-sample
        trailing batch, which BatchNorm cannot train on).
    num_steps : int
        Optimizer steps taken.
    """

    loss: float
    num_samples: int
    num_steps: int


@dataclass(frozen=True)
class EvalStats:
    """Counts from one evaluation.

    Attributes
    ----------
    correct : int
        Correctly classified samples.
    loss_sum : float
        Summed cross-entropy.
    num_samples : int
        Samples evaluated.
    """

    correct: int
    loss_sum: float
    num_samples: int

    @property
    def accuracy(self) -> float:
        """Fraction correct (0 for an empty split)."""
        return self.correct / self.num_samples if self.num_samples else 0.0

    @property
    def loss(self) -> float:
        """Mean cross-entropy (0 for an empty split)."""
        return self.loss_sum / self.num_samples if self.num_samples else 0.0


def make_sgd(
    params: Iterable[nn.Parameter],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.SGD:
    """Build a plain SGD optimizer."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def train_epochs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    transform: BatchTransform,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> TrainStats:
    """Train for whole epochs of shuffled minibatches.

    Parameters
    ----------
    model : torch.nn.Module
        Model on ``device``; put in train mode here.
    x, y : torch.Tensor
        uint8 images and labels (moved to ``device`` once).
    optimizer : torch.optim.Optimizer
        Optimizer over the parameters to train.
    transform : BatchTransform
        Batch normalisation and augmentation.
    epochs, batch_size : int
        Number of passes and minibatch size (the last batch may be smaller).
    generator : torch.Generator
        CPU generator for shuffles and augmentations (all drawn before the
        first step, in the order a per-batch loop draws them, and moved to
        ``device`` in one copy).
    device : torch.device
        Training device.

    Returns
    -------
    TrainStats
        Mean loss, samples and steps (the loss is read from the device once,
        at the end).

    Raises
    ------
    NonFiniteLossError
        If a loss becomes NaN or infinite.
    """
    model.train()
    x, y = x.to(device), y.to(device)
    # A one-sample trailing batch is left out (BatchNorm cannot train on one
    # sample); it is seen next epoch.
    plan = epoch_plan(x.shape[0], epochs, batch_size, transform, generator).to(device)
    total_loss = torch.zeros((), device=device)
    steps = samples = 0
    for idx, draws in plan:
        inputs = transform.apply(x[idx], draws)
        loss = nn.functional.cross_entropy(model(inputs), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * idx.numel()
        steps += 1
        samples += idx.numel()
    mean_loss = float(total_loss) / samples if samples else 0.0
    if not math.isfinite(mean_loss):
        raise NonFiniteLossError(
            f"training loss became {mean_loss} after {steps} steps; lower the "
            "learning rate or check the data"
        )
    return TrainStats(loss=mean_loss, num_samples=samples, num_steps=steps)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    transform: BatchTransform,
    *,
    batch_size: int,
    device: torch.device,
) -> EvalStats:
    """Count correct predictions and summed loss in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
        Model on ``device``.
    x, y : torch.Tensor
        uint8 images and labels (moved to ``device`` once, if not there).
    transform : BatchTransform
        Normalisation (no augmentation is applied).
    batch_size : int
        Evaluation batch size.
    device : torch.device
        Device.

    Returns
    -------
    EvalStats
        Counts over the whole split.
    """
    model.eval()
    x, y = x.to(device), y.to(device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), device=device)
    for start in range(0, x.shape[0], batch_size):
        inputs = transform.apply(x[start : start + batch_size], None)
        targets = y[start : start + batch_size]
        logits = model(inputs)
        loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
        correct += (logits.argmax(dim=1) == targets).sum()
    # One host sync for both counts (float64 holds both exactly).
    counts = torch.stack([correct.double(), loss_sum.double()]).cpu().tolist()
    return EvalStats(int(counts[0]), counts[1], int(x.shape[0]))
