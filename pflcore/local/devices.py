"""Where a worker's tensors live, and how its GPU computes.

Every runtime (a worker's model, data and transform) keeps the tensors of one
computation on its one device by construction:

* :func:`place_model` moves the model to the device *before* the run's initial
  weights are taken from it, so the initial state lives where the candidates,
  the received weights and the gradients live;
* :func:`state_on` is how any received state (an ``ArrayRecord``, a saved
  state) enters a runtime for arithmetic; ``load_state_dict`` copies across
  devices by itself;
* :class:`SplitCache` moves a client's data split to the device once and keeps
  the most recently used ones there, so a message uploads each split it uses
  at most once.

:func:`set_deterministic` is the ``deterministic`` setting of every package.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from flwr.app import ArrayRecord
from torch import nn

from pflcore.data.client_data import Split

State = dict[str, torch.Tensor]
ModuleT = TypeVar("ModuleT", bound=nn.Module)

# cuBLAS reads this when it creates its first handle, i.e. at the first matmul
# on the GPU: it must be in the environment before then (PyTorch's
# reproducibility notes: ":4096:8" or ":16:8").
CUBLAS_WORKSPACE = ":4096:8"


def state_on(
    state: ArrayRecord | Mapping[str, torch.Tensor], device: torch.device
) -> State:
    """A detached copy of ``state`` with every tensor on ``device``.

    Parameters
    ----------
    state : ArrayRecord or mapping
        Weights as received (an ``ArrayRecord``) or as a state dict.
    device : torch.device
        The runtime's device.

    Returns
    -------
    dict
        Fresh tensors (never views of ``state``'s), in ``state``'s key order.
    """
    tensors = state.to_torch_state_dict() if isinstance(state, ArrayRecord) else state
    return {k: v.detach().to(device, copy=True) for k, v in tensors.items()}


def place_model(model: ModuleT, device: torch.device) -> tuple[ModuleT, State]:
    """Move ``model`` to ``device``; return it with its initial state taken there.

    Taking the initial state after the move is what keeps a runtime on one
    device: a state cloned before the move stays on the CPU while everything
    the model produces is on the GPU.
    """
    model = model.to(device)
    return model, state_on(model.state_dict(), device)


class SplitCache:
    """The most recently used clients' data splits, kept on one device.

    A split is gathered on the CPU and moved once; the data never change, so
    a cached split is always current. ``capacity`` bounds the device memory
    (a worker serves one client at a time; a few entries cover the splits one
    message uses).

    Parameters
    ----------
    device : torch.device
        Where the splits are kept.
    capacity : int
        Splits kept (least recently used dropped first).
    """

    def __init__(self, device: torch.device, capacity: int = 4) -> None:
        self.device = device
        self.capacity = capacity
        self._splits: OrderedDict[tuple[int, str], Split] = OrderedDict()

    def get(self, pid: int, name: str, load: Callable[[], Split]) -> Split:
        """Client ``pid``'s split ``name`` on the device (``load()`` on a miss)."""
        key = (pid, name)
        if key in self._splits:
            self._splits.move_to_end(key)
            return self._splits[key]
        x, y = load()
        split = (x.to(self.device), y.to(self.device))
        self._splits[key] = split
        while len(self._splits) > self.capacity:
            self._splits.popitem(last=False)
        return split


def set_deterministic(enabled: bool) -> None:
    """Set PyTorch's GPU determinism flags (all of them, on or off).

    On: cuDNN picks deterministic kernels and no benchmarking, TF32 is off for
    matmuls and convolutions (full float32 as on the CPU), and PyTorch warns
    when an operator has no deterministic implementation
    (``use_deterministic_algorithms(True, warn_only=True)``);
    ``CUBLAS_WORKSPACE_CONFIG`` is set unless already set, which takes effect
    only if CUDA has not run a matmul in this process yet. Off: PyTorch's
    defaults (no determinism, no benchmarking, TF32 convolutions allowed).
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default either way
    torch.backends.cudnn.allow_tf32 = not enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def apply_determinism(enabled: bool, device: torch.device | str) -> None:
    """Apply the ``deterministic`` setting for work on ``device``.

    A no-op off CUDA: CPU kernels are deterministic already, and a CPU run's
    results must not depend on the setting.
    """
    if torch.device(device).type == "cuda":
        set_deterministic(enabled)


def client_device(num_gpus: float) -> torch.device:
    """The device a client trains on: CUDA when the config gives it a GPU share.

    Ray also hides GPUs from actors started with ``num_gpus=0``; deciding from
    the config keeps that true whatever Ray's default becomes.
    """
    return torch.device("cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")
