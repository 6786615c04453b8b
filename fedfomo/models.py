"""The FedFomo paper's CNN (the authors' ``tf_cnn``), or the shared protocol's."""

from __future__ import annotations

import torch
from torch import nn

from pflcore.local.models import LeNet


def _flat_side(image_size: int) -> int:
    side = image_size
    for _ in range(2):  # conv3x3 (no padding), then 2x2 max-pool
        side = (side - 2) // 2
    return side - 2  # the third conv3x3


MODEL_NAMES = ("tf_cnn", "lenet")


class TFCNN(nn.Module):
    """conv3x3 C->32, pool, conv3x3 32->64, pool, conv3x3 64->64, FC 64, FC classes.

    No padding, ReLU after every layer but the last; for 32 px RGB input the
    flattened features have 64 x 4 x 4 = 1024 entries and the network has
    122,570 parameters with 10 classes (the authors' ``federated/network.py``).

    Parameters
    ----------
    num_classes : int
        Output classes.
    channels : int
        Input channels (3 for CIFAR, 1 for digits/MNIST).
    image_size : int
        Input side length (at least 22).
    """

    def __init__(self, num_classes: int, channels: int = 3, image_size: int = 32):
        super().__init__()
        side = _flat_side(image_size)
        if side < 1:
            raise ValueError(
                f"tf_cnn needs images of at least 22 px, got {image_size} "
                "(set dataset.image_size)"
            )
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch ``(B, C, H, W)``."""
        return self.classifier(self.features(x))


def build_model(
    seed: int, num_classes: int, channels: int, image_size: int, name: str = "tf_cnn"
) -> nn.Module:
    """The run's common initialisation: identical in every process for one seed.

    ``name``: ``tf_cnn`` (the authors' network) or ``lenet`` (the shared
    protocol's, :class:`pflcore.local.models.LeNet`).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "lenet":
            return LeNet(num_classes, channels, image_size)
        return TFCNN(num_classes, channels, image_size)
