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
from typing import Any, TypeVar, cast

import torch
from flwr.app import ArrayRecord
from torch import nn

from pflcore.data.client_data import ClientData, Split
from pflcore.local.devices import SplitCache
from pflcore.local.training import (
    EvalStats,
    TrainStats,
    evaluate,
    make_sgd,
    train_epochs,
)
from pflcore.local.transforms import BatchTransform


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
        ``device`` (see :func:`pflcore.local.devices.place_model`).
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
    config = json.loads(config_json)
    runtime = _BUILDERS[builder](config)
    if config.get("tuning"):  # as the server's view (AlgorithmPackage.build)
        runtime.data = runtime.data.tuning_view(int(config["seed"]))
    return runtime


def cached_runtime(
    build: Callable[[dict[str, Any]], RuntimeT], config: dict[str, Any]
) -> RuntimeT:
    """The worker's runtime for ``config``, built by ``build`` on first use.

    One cache for every package, keyed by the builder and the configuration
    (canonical JSON), so a worker that serves several runs one after another
    (a sweep in one Ray session) never mixes their data or models; the two
    most recent are kept. A tuning run's runtime holds the tuning view of its
    data (:meth:`~pflcore.data.client_data.ClientData.tuning_view`).
    """
    name = f"{build.__module__}.{build.__qualname__}"
    _BUILDERS[name] = build
    runtime = _built(name, json.dumps(config, sort_keys=True))
    return cast(RuntimeT, runtime)


def clear_runtimes() -> None:
    """Forget every cached runtime (the next message builds its runtime anew)."""
    _built.cache_clear()
