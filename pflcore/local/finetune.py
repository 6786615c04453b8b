"""Step-counted SGD and "fine-tune a copy, test before and after".

Two pieces several packages need beside the epoch loop of
:mod:`pflcore.local.training`: training for an exact number of minibatch steps
(each batch drawn independently), and the FedAvg + fine-tuning evaluation
that adapts a *copy* of the received model on the client's training split,
tests it on the client's test split, and keeps nothing.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from pflcore.local.batching import step_plan
from pflcore.local.training import (
    EvalStats,
    NonFiniteLossError,
    TrainStats,
    evaluate,
    make_sgd,
    train_epochs,
)
from pflcore.local.transforms import BatchTransform

FINETUNE_UNITS = ("steps", "epochs")


def train_steps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    transform: BatchTransform,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> TrainStats:
    """Take exactly ``steps`` optimizer steps, each on an independently drawn batch.

    Parameters
    ----------
    model : torch.nn.Module
        Model on ``device``; put in train mode here.
    x, y : torch.Tensor
        uint8 images and labels of the split trained on.
    optimizer : torch.optim.Optimizer
        Optimizer over the parameters to train.
    transform : BatchTransform
        Batch normalisation and augmentation.
    steps, batch_size : int
        Number of steps and minibatch size (at most ``len(x)``).
    generator : torch.Generator
        CPU generator for the batch draws and augmentations (all drawn before
        the first step and moved to ``device`` in one copy).
    device : torch.device
        Training device.

    Returns
    -------
    TrainStats
        Mean loss before each step, samples and steps.

    Raises
    ------
    NonFiniteLossError
        Naming the first step whose loss was NaN or infinite (the losses are
        read from the device once, after the last step).
    """
    model.train()
    x, y = x.to(device), y.to(device)
    plan = step_plan(x.shape[0], steps, batch_size, generator, transform).to(device)
    losses = []
    for idx, draws in plan:
        inputs = transform.apply(x[idx], draws)
        loss = nn.functional.cross_entropy(model(inputs), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    values = torch.stack(losses).cpu().tolist() if losses else []  # the one host sync
    total = 0.0
    for step, value in enumerate(values):
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss became {value} at step {step + 1} of {steps}; lower "
                "the learning rate or check the data"
            )
        total += value
    return TrainStats(
        loss=total / steps if steps else 0.0,
        num_samples=steps * batch_size,
        num_steps=steps,
    )


@dataclass(frozen=True)
class FinetuneSpec:
    """How a copy of a model is adapted before it is tested.

    Attributes
    ----------
    unit : str
        ``"steps"`` (independently drawn batches) or ``"epochs"`` (shuffled passes).
    amount : int
        Number of steps or epochs; 0 tests the received model unchanged.
    lr : float
        SGD learning rate.
    batch_size : int
        Minibatch size.
    momentum, weight_decay : float
        SGD settings.
    """

    unit: str
    amount: int
    lr: float
    batch_size: int
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.unit not in FINETUNE_UNITS:
            raise ValueError(f"fine-tuning unit must be one of {FINETUNE_UNITS}")
        if self.amount < 0 or self.batch_size < 1 or self.lr < 0:
            raise ValueError(f"invalid fine-tuning settings {self}")


def finetune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    transform: BatchTransform,
    spec: FinetuneSpec,
    *,
    generator: torch.Generator,
    device: torch.device,
) -> TrainStats:
    """Adapt ``model`` in place on ``(x, y)`` as ``spec`` says (fresh SGD optimizer)."""
    optimizer = make_sgd(model.parameters(), spec.lr, spec.momentum, spec.weight_decay)
    if spec.unit == "steps":
        return train_steps(
            model,
            x,
            y,
            optimizer,
            transform,
            steps=spec.amount,
            batch_size=spec.batch_size,
            generator=generator,
            device=device,
        )
    return train_epochs(
        model,
        x,
        y,
        optimizer,
        transform,
        epochs=spec.amount,
        batch_size=spec.batch_size,
        generator=generator,
        device=device,
    )


def finetune_copy_and_evaluate(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    transform: BatchTransform,
    spec: FinetuneSpec,
    *,
    eval_batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[EvalStats, EvalStats]:
    """Test ``model``, adapt a copy on the training split, test the copy.

    ``model`` itself is left untouched and the copy is discarded: only the
    two evaluations leave this function. Test data is never trained on.

    Parameters
    ----------
    model : torch.nn.Module
        The received (global) model, on ``device``.
    train, test : tuple of torch.Tensor
        The client's ``(x, y)`` training and test splits.
    transform : BatchTransform
        Batch transform.
    spec : FinetuneSpec
        The adaptation.
    eval_batch_size : int
        Evaluation batch size.
    generator : torch.Generator
        CPU generator for the adaptation's batches.
    device : torch.device
        Device.

    Returns
    -------
    before, after : EvalStats
        Test counts of the received model and of the adapted copy.
    """
    test = (test[0].to(device), test[1].to(device))  # tested twice, moved once
    before = evaluate(
        model, *test, transform, batch_size=eval_batch_size, device=device
    )
    after = finetune_copy_and_test(
        model,
        train,
        test,
        transform,
        spec,
        eval_batch_size=eval_batch_size,
        generator=generator,
        device=device,
    )
    return before, after


def finetune_copy_and_test(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    transform: BatchTransform,
    spec: FinetuneSpec,
    *,
    eval_batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> EvalStats:
    """Adapt a copy of ``model`` on the training split and test the copy.

    As :func:`finetune_copy_and_evaluate` without testing ``model`` itself.
    """
    adapted = copy.deepcopy(model)
    finetune(adapted, *train, transform, spec, generator=generator, device=device)
    return evaluate(
        adapted, *test, transform, batch_size=eval_batch_size, device=device
    )
