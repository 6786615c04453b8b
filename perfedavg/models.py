"""The papers' networks.

* ``mlp``: Per-FedAvg's MLP, input-80-60-classes with ELU (784-80-60-10 on
  MNIST: 68,270 parameters; 3072-80-60-10 on CIFAR-10).
* ``cnn``: the FedLab CNN of the Jiang et al. pipeline: conv5x5 1->32, pool,
  conv5x5 32->64, pool, FC 3136->1024, dropout, FC classes (about 3.3 M
  parameters with 62 classes).
* ``lenet``: the shared protocol's network (:class:`pflcore.local.models.LeNet`).
"""

from __future__ import annotations

import torch
from torch import nn

from pflcore.local.models import LeNet

MODEL_NAMES = ("mlp", "cnn", "lenet")


class MLP(nn.Module):
    """Per-FedAvg's two-hidden-layer MLP with ELU activations.

    Parameters
    ----------
    in_features : int
        Flattened input size (C x H x W).
    num_classes : int
        Output classes.
    hidden : tuple of int
        Hidden widths (the paper's 80 and 60).
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: tuple[int, int] = (80, 60)
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden[0]),
            nn.ELU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ELU(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch ``(B, C, H, W)``."""
        return self.net(x)


class FedLabCNN(nn.Module):
    """The FedLab / LEAF FEMNIST CNN for 28x28 grey images.

    Parameters
    ----------
    num_classes : int
        Output classes.
    dropout : float
        Dropout before the last layer (FedLab: 0.6).
    """

    def __init__(self, num_classes: int, dropout: float = 0.6) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(7 * 7 * 64, 1024),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch ``(B, 1, 28, 28)``."""
        return self.classifier(self.features(x))


def build_model(
    name: str,
    num_classes: int,
    channels: int,
    image_size: int,
    dropout: float = 0.6,
) -> nn.Module:
    """Build a network by name for the given input shape.

    Raises
    ------
    ValueError
        For an unknown name, or the CNN on inputs other than 1x28x28.
    """
    if name == "mlp":
        return MLP(channels * image_size * image_size, num_classes)
    if name == "cnn":
        if (channels, image_size) != (1, 28):
            raise ValueError(
                f"model cnn expects 1x28x28 images, got {channels}x{image_size}"
                f"x{image_size}"
            )
        return FedLabCNN(num_classes, dropout)
    if name == "lenet":
        return LeNet(num_classes, channels, image_size)
    raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
