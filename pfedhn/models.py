"""Target networks and the hypernetwork that generates them.

Targets
-------
``cnn``: the authors' CNNTarget (conv 5x5 c->16, ReLU, pool 2, conv 5x5 16->32,
ReLU, pool 2, FC flat->120->84->C, ReLU after each hidden FC). For 32x32
input ``flat`` is 800 (the paper's CIFAR network); for 28x28 MNIST it is 512.

``mlp``: the MNIST target of the authors' early code (784->100, ReLU,
->10; 79,510 parameters), the suite's MNIST default. It accepts 28x28 input
(any image size: it flattens ``channels * size * size`` pixels).

pFedHN-PC: the same target without its classifier (``with_head=False``); it
returns the 84-d (CNN) or 100-d (MLP) post-ReLU features, and each client
keeps its own ``Linear(features, C)`` head.

Hypernetwork
------------
``Embedding(N, e)`` -> ``Linear(e, hidden)`` -> ``n_hidden`` x [ReLU,
``Linear(hidden, hidden)``] -> one linear head per target tensor (authors'
CNNHyper, no spectral norm). ``e = int(1 + N / 4)`` unless configured.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

TARGETS = ("cnn", "mlp")


class CNNTarget(nn.Module):
    """The authors' CIFAR CNN, sized for any square input.

    Parameters
    ----------
    in_channels : int
        Image channels (3 for CIFAR, 1 for MNIST).
    image_size : int
        Input side length (32 for CIFAR: flatten size 800).
    num_classes : int
        Classes C.
    n_kernels : int
        Channels of the first conv (16 in the paper; the second has twice).
    with_head : bool
        Include the final ``Linear(84, C)`` (False for pFedHN-PC).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        n_kernels: int = 16,
        with_head: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, n_kernels, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(n_kernels, 2 * n_kernels, 5)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for CNNTarget")
        self.fc1 = nn.Linear(2 * n_kernels * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.feature_dim = 84
        self.fc3 = nn.Linear(84, num_classes) if with_head else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (or 84-d features without a head)."""
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        x = torch.relu(self.fc2(x))
        return self.fc3(x) if self.fc3 is not None else x


class MLPTarget(nn.Module):
    """MNIST target: flatten -> Linear(in, 100) -> ReLU -> Linear(100, C).

    Parameters
    ----------
    in_features : int
        Flattened input size (784 for 28x28 MNIST).
    num_classes : int
        Classes C.
    hidden : int
        Hidden width (100).
    with_head : bool
        Include the final linear layer (False for pFedHN-PC).
    """

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        hidden: int = 100,
        with_head: bool = True,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.feature_dim = hidden
        self.fc2 = nn.Linear(hidden, num_classes) if with_head else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (or hidden features without a head)."""
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x) if self.fc2 is not None else x


def build_target(
    name: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    with_head: bool = True,
    n_kernels: int = 16,
) -> CNNTarget | MLPTarget:
    """The target network named ``name`` (``cnn`` or ``mlp``)."""
    if name == "cnn":
        return CNNTarget(in_channels, image_size, num_classes, n_kernels, with_head)
    if name == "mlp":
        return MLPTarget(
            in_channels * image_size * image_size, num_classes, 100, with_head
        )
    raise ValueError(f"unknown target {name!r}; choose one of {TARGETS}")


def embedding_dim(num_clients: int) -> int:
    """The authors' embedding size int(1 + N / 4) (13 for N = 50)."""
    return int(1 + num_clients / 4)


class HyperNetwork(nn.Module):
    """Client embeddings and an MLP with one linear head per target tensor.

    Parameters
    ----------
    num_clients : int
        Number of embeddings N.
    target_shapes : dict
        Ordered ``{state-dict key: shape}`` of the tensors to generate.
    embed_dim : int
        Embedding size e.
    hidden_dim : int
        Width of the MLP (100).
    n_hidden : int
        Number of [ReLU, Linear(hidden, hidden)] blocks (3 for CIFAR, 1 for MNIST).
    """

    def __init__(
        self,
        num_clients: int,
        target_shapes: dict[str, tuple[int, ...]],
        embed_dim: int,
        hidden_dim: int = 100,
        n_hidden: int = 3,
    ) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(num_clients, embed_dim)
        layers: list[nn.Module] = [nn.Linear(embed_dim, hidden_dim)]
        for _ in range(n_hidden):
            layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, hidden_dim)]
        self.mlp = nn.Sequential(*layers)
        self.shapes = OrderedDict((k, tuple(s)) for k, s in target_shapes.items())
        # ModuleDict keys may not contain dots.
        self.heads = nn.ModuleDict(
            {
                _head_name(k): nn.Linear(hidden_dim, int(torch.Size(s).numel()))
                for k, s in self.shapes.items()
            }
        )

    def generate(self, embedding: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Target tensors for one embedding vector ``(e,)``."""
        features = self.mlp(embedding)
        return OrderedDict(
            (k, self.heads[_head_name(k)](features).view(shape))
            for k, shape in self.shapes.items()
        )

    def forward(self, client: int) -> OrderedDict[str, torch.Tensor]:
        """Target tensors of client ``client`` (its own embedding)."""
        index = torch.tensor(client, device=self.embeddings.weight.device)
        return self.generate(self.embeddings(index))


def _head_name(key: str) -> str:
    return key.replace(".", "__")


def target_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a model's parameters, in state-dict order.

    The targets here have no buffers, so this is the whole state dict.
    """
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
