"""A loaded dataset together with every client's share of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pflcore.data import ImageData
from pflcore.partition import ClientSplit


@dataclass(frozen=True)
class ClientData:
    """The pooled samples and every client's train/test indices into them.

    Attributes
    ----------
    data : ImageData
        The loaded dataset.
    x, y : torch.Tensor
        The pooled uint8 images and int64 labels that ``split`` indexes.
    split : ClientSplit
        Each client's train and test indices.
    """

    data: ImageData
    x: torch.Tensor
    y: torch.Tensor
    split: ClientSplit

    def client(
        self, pid: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Client ``pid``'s (x_train, y_train, x_test, y_test)."""
        tr = torch.from_numpy(self.split.train[pid])
        te = torch.from_numpy(self.split.test[pid])
        return self.x[tr], self.y[tr], self.x[te], self.y[te]

    def class_counts(self) -> np.ndarray:
        """Per-client (train, test) class counts, shape ``(clients, 2, classes)``."""
        return self.split.class_counts(self.y.numpy(), self.data.num_classes)
