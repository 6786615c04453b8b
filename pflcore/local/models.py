"""The shared protocol's network, which every package can train (``lenet``).

pFedHN's CIFAR network (Shamsian et al. 2021, the authors' ``CNNTarget``;
:class:`pfedhn.models.CNNTarget` is the same network, which its hypernetwork
generates), written as a chain of units so that FedPer can keep the last ones
personal: ``K_P = 1`` is the last linear layer, as the packages' own networks
count it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class UnitChain(nn.Module, ABC):
    """A network that is a chain of units, run in order (FedPer's view of a network)."""

    @abstractmethod
    def units(self) -> list[nn.Module]:
        """The units, in forward order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a normalised batch ``(B, C, H, W)``."""
        for unit in self.units():
            x = unit(x)
        return x


class LeNet(UnitChain):
    """conv5x5 C->16, pool, conv5x5 16->32, pool, FC 120, FC 84, FC classes.

    ReLU after every layer but the last, 2x2 max-pooling after each
    convolution, no padding: 32 px RGB input flattens to 32 x 5 x 5 = 800
    features, and the network has 121,182 parameters with 10 classes. The
    parameters are created in forward order, as in ``CNNTarget``, so one seed
    gives both the same initial weights.

    Parameters
    ----------
    num_classes : int
        Output classes.
    in_channels : int
        Image channels.
    image_size : int
        Input side length (at least 16).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(
                f"lenet needs images of at least 16 px, got {image_size} "
                "(set dataset.image_size)"
            )
        self.stem: nn.Module = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2)),
                nn.Sequential(
                    nn.Flatten(), nn.Linear(32 * side * side, 120), nn.ReLU()
                ),
                nn.Sequential(nn.Linear(120, 84), nn.ReLU()),
            ]
        )
        self.classifier = nn.Linear(84, num_classes)

    def units(self) -> list[nn.Module]:
        """The first convolution, the second, FC 120, FC 84 and the classifier."""
        return [self.stem, *self.blocks, self.classifier]
