"""What a worker process holds for the clients it serves: their data and one model.

Every package's ClientApp works through one :class:`WorkerRuntime`: the
clients' data splits (:class:`ClientData`), the network, the run's common
initial weights, the batch transform and the device. A worker builds it once
per configuration (:func:`cached_runtime`) and reuses it for every message
and every client it serves; nothing in it belongs to one client (a client's
own state lives in Flower's ``context.state``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Self, TypeVar, cast

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch import nn

from pflcore.data import ImageData
from pflcore.devices import Split, SplitCache
from pflcore.partition import ClientSplit
from pflcore.training import EvalStats, TrainStats, evaluate, make_sgd, train_epochs
from pflcore.transforms import BatchTransform

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class ClientData:
    """The loaded samples and every client's indices into them, per split.

    Attributes
    ----------
    data : ImageData
        The loaded dataset (classes, channels, normalisation statistics).
    pools : dict
        ``{split: (x uint8 (N, C, H, W), y int64)}``: what the split's indices
        point into. Splits cut from one pooled set share one pool.
    indices : dict
        ``{split: [client j's sorted indices into the pool]}`` for the splits
        the partition makes (``train`` and ``test``; ``val`` where the
        algorithm holds out a validation split).

    Packages subclass it only to add what their partition records (FedPer's
    client names, FedFomo's latent distributions, pFedHN's class shares).
    """

    data: ImageData
    pools: dict[str, Split]
    indices: dict[str, list[np.ndarray]]

    @classmethod
    def from_split(
        cls,
        data: ImageData,
        x: torch.Tensor,
        y: torch.Tensor,
        split: ClientSplit,
        **extra: Any,
    ) -> Self:
        """Train and test indices of ``split`` into one pooled ``(x, y)``."""
        indices = {"train": list(split.train), "test": list(split.test)}
        return cls(data, cls.shared_pool(x, y, indices), indices, **extra)

    @staticmethod
    def shared_pool(
        x: torch.Tensor, y: torch.Tensor, indices: dict[str, list[np.ndarray]]
    ) -> dict[str, Split]:
        """``pools`` for splits that all index one pooled ``(x, y)``."""
        return {name: (x, y) for name in indices}

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.indices["train"])

    def split_of(self, pid: int, name: str) -> Split:
        """Client ``pid``'s ``(x, y)`` in split ``name``, gathered on the CPU."""
        if name not in self.indices:
            raise ValueError(
                f"split must be one of {sorted(self.indices)}, got {name!r}"
            )
        x, y = self.pools[name]
        idx = torch.from_numpy(self.indices[name][pid])
        return x[idx], y[idx]

    def size(self, pid: int, name: str = "train") -> int:
        """Client ``pid``'s number of samples in split ``name``."""
        return int(self.indices[name][pid].size)

    def sizes(self) -> dict[str, list[int]]:
        """Samples per client in each split."""
        return {name: [int(i.size) for i in idx] for name, idx in self.indices.items()}

    def class_counts(self, splits: tuple[str, ...] = ("train", "test")) -> np.ndarray:
        """Per-client class counts, shape ``(clients, len(splits), classes)``."""
        c = self.data.num_classes
        out = np.zeros((self.num_clients, len(splits), c), dtype=np.int64)
        for s, name in enumerate(splits):
            labels = self.pools[name][1].numpy()
            for j, idx in enumerate(self.indices[name]):
                out[j, s] = np.bincount(labels[idx], minlength=c)
        return out


@dataclass
class WorkerRuntime:
    """A worker's data, model, initial weights, batch transform and device.

    Attributes
    ----------
    data : ClientData
        Every client's splits.
    model : torch.nn.Module
        The network, on ``device``; loaded with a client's weights per message.
    initial_state : dict
        The run's common initial weights (identical in every process), on
        ``device`` (see :func:`pflcore.devices.place_model`).
    transform : BatchTransform
        Batch normalisation and augmentation.
    device : torch.device
        Where the model trains.
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

    def split(self, pid: int, name: str) -> Split:
        """Client ``pid``'s split ``name`` on the device (moved once)."""
        return self.splits.get(pid, name, lambda: self.data.split_of(pid, name))

    def train_split(self, pid: int) -> Split:
        """Client ``pid``'s training split, on the device."""
        return self.split(pid, "train")

    def test_split(self, pid: int) -> Split:
        """Client ``pid``'s test split, on the device."""
        return self.split(pid, "test")

    def load(self, weights: ArrayRecord | dict[str, torch.Tensor] | None) -> None:
        """Load ``weights`` (the initial weights when ``None``) into the model."""
        if weights is None:
            state = self.initial_state
        elif isinstance(weights, ArrayRecord):
            state = weights.to_torch_state_dict()
        else:
            state = weights
        self.model.load_state_dict(state, strict=True)

    def weights(self) -> ArrayRecord:
        """The model's current state dict as an ArrayRecord."""
        return ArrayRecord(self.model.state_dict())

    def evaluate(self, pid: int, name: str, batch_size: int) -> EvalStats:
        """Evaluate the loaded model on client ``pid``'s split ``name``."""
        x, y = self.split(pid, name)
        return evaluate(
            self.model, x, y, self.transform, batch_size=batch_size, device=self.device
        )

    def evaluate_test(self, pid: int, batch_size: int) -> EvalStats:
        """Evaluate the loaded model on client ``pid``'s test split."""
        return self.evaluate(pid, "test", batch_size)


def sgd_epochs(
    runtime: WorkerRuntime,
    pid: int,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    epochs: int,
    seed: int,
    params: list[nn.Parameter] | None = None,
) -> TrainStats:
    """Epochs of SGD on client ``pid``'s training split, with a fresh optimizer.

    Trains ``params`` (default: all of the loaded model's) with minibatches
    of ``batch_size`` shuffled by a generator seeded with ``seed``.
    """
    x, y = runtime.train_split(pid)
    trained = list(runtime.model.parameters()) if params is None else params
    optimizer = make_sgd(trained, lr, momentum, weight_decay)
    return train_epochs(
        runtime.model,
        x,
        y,
        optimizer,
        runtime.transform,
        epochs=epochs,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(seed),
        device=runtime.device,
    )


RuntimeT = TypeVar("RuntimeT", bound=WorkerRuntime)

_BUILDERS: dict[str, Callable[[dict[str, Any]], WorkerRuntime]] = {}


@lru_cache(maxsize=2)
def _built(builder: str, config_json: str) -> WorkerRuntime:
    return _BUILDERS[builder](json.loads(config_json))


def cached_runtime(
    build: Callable[[dict[str, Any]], RuntimeT], config: dict[str, Any]
) -> RuntimeT:
    """The worker's runtime for ``config``, built by ``build`` on first use.

    One cache for every package, keyed by the builder and the configuration
    (canonical JSON), so a worker that serves several runs one after another
    (a sweep in one Ray session) never mixes their data or models; the two
    most recent are kept.
    """
    name = f"{build.__module__}.{build.__qualname__}"
    _BUILDERS[name] = build
    runtime = _built(name, json.dumps(config, sort_keys=True))
    return cast(RuntimeT, runtime)


def clear_runtimes() -> None:
    """Forget every cached runtime (the next message builds its runtime anew)."""
    _built.cache_clear()
