"""A loaded dataset with every client's share of it, and the model that serves them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pflcore.data import BatchTransform, ImageData
from pflcore.devices import Split, SplitCache
from pflcore.partition import ClientSplit
from pflcore.training import EvalStats, evaluate


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

    def split_of(self, pid: int, name: str) -> Split:
        """Client ``pid``'s ``(x, y)`` in split ``name`` (``train`` or ``test``)."""
        if name not in ("train", "test"):
            raise ValueError(f"split must be train or test, got {name!r}")
        idx = torch.from_numpy(getattr(self.split, name)[pid])
        return self.x[idx], self.y[idx]

    def class_counts(self) -> np.ndarray:
        """Per-client (train, test) class counts, shape ``(clients, 2, classes)``."""
        return self.split.class_counts(self.y.numpy(), self.data.num_classes)


@dataclass
class ModelRuntime:
    """What a worker process builds once and reuses for every client it serves.

    Attributes
    ----------
    data : ClientData
        The dataset and every client's split.
    model : torch.nn.Module
        The network, on ``device``.
    initial_state : dict
        The run's common initial weights (identical in every process), on
        ``device`` (see :func:`pflcore.devices.place_model`).
    transform : BatchTransform
        Batch normalisation and augmentation.
    device : torch.device
        Training device.
    splits : SplitCache
        The most recently used clients' splits, on ``device``.
    """

    data: ClientData
    model: nn.Module
    initial_state: dict[str, torch.Tensor]
    transform: BatchTransform
    device: torch.device
    splits: SplitCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.splits = SplitCache(self.device)

    def train_split(self, pid: int) -> Split:
        """Client ``pid``'s training split, on the device (moved once)."""
        return self.splits.get(pid, "train", lambda: self.data.split_of(pid, "train"))

    def test_split(self, pid: int) -> Split:
        """Client ``pid``'s test split, on the device (moved once)."""
        return self.splits.get(pid, "test", lambda: self.data.split_of(pid, "test"))

    def evaluate_test(self, pid: int, batch_size: int) -> EvalStats:
        """Evaluate the loaded model on client ``pid``'s test split."""
        x, y = self.test_split(pid)
        return evaluate(
            self.model, x, y, self.transform, batch_size=batch_size, device=self.device
        )
