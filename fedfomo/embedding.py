"""Image embeddings for FedFomo's latent split, trained here and cached on disk.

The authors (NVlabs/FedFomo, ``federated_datasets/latent_dist.py``) embed the
images with an ImageNet-pretrained VGG-11-BN fine-tuned on CIFAR (its
penultimate 4096-d layer), reduce the features to 256 dimensions with PCA and
cluster them with k-means (k = 5, 5 initialisations, 100 iterations), so the
clusters follow image content and, through it, the labels. No pretrained
weights can be downloaded here, so :func:`train_embedding_net` trains a small
VGG-style network on the pooled training images (labels as targets) and its
penultimate layer is the embedding; :func:`reduce_and_cluster` then follows
the authors. The embedding is computed once, before Ray starts, and cached on
disk under a key of the images, labels and settings, so every worker process
reads the same file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedfomo.latent import canonical_labels
from pflcore.data.images import DataFormatError, channel_stats
from pflcore.data.partition import PartitionError

if TYPE_CHECKING:  # fedfomo.settings imports this module's neighbours
    from fedfomo.settings import Embedding


class EmbeddingNet(nn.Module):
    """Four conv-BN-ReLU blocks (32, 64, 128, ``width`` channels), then a classifier.

    ``features`` maps an image batch to its ``width``-d embedding (global
    average pooling of the last block).
    """

    def __init__(self, channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [channels, 32, 64, 128, width]
        for i, (c_in, c_out) in enumerate(itertools.pairwise(sizes)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of a normalised batch."""
        out: torch.Tensor = self.body(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        out: torch.Tensor = self.classifier(self.features(x))
        return out


def _normalised(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.to(torch.float32) / 255.0 - mean) / std


def train_embedding_net(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, spec: Embedding, seed: int
) -> tuple[EmbeddingNet, tuple[torch.Tensor, torch.Tensor]]:
    """Train :class:`EmbeddingNet` to classify ``x`` (uint8 NCHW) as ``y``.

    ``spec`` gives the epochs, batch size, learning rate (SGD, momentum 0.9,
    weight decay 5e-4, cosine decay) and width; ``seed`` the initialisation
    and the batch order. Returns the trained network (in eval mode) and the
    per-channel normalisation it was trained with.
    """
    torch.manual_seed(seed)
    net = EmbeddingNet(int(x.shape[1]), num_classes, spec.width)
    mean_t, std_t = channel_stats(x)
    mean = torch.tensor(mean_t, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std_t, dtype=torch.float32).view(1, -1, 1, 1)
    steps = spec.epochs * max(1, -(-int(x.shape[0]) // spec.batch_size))
    optimizer = torch.optim.SGD(
        net.parameters(), lr=spec.lr, momentum=0.9, weight_decay=5e-4
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(spec.epochs):
        order = torch.randperm(int(x.shape[0]), generator=generator)
        for batch in order.split(spec.batch_size):
            inputs = _normalised(x[batch], mean, std)
            flip = torch.rand(batch.numel(), generator=generator) < 0.5
            inputs = torch.where(flip.view(-1, 1, 1, 1), inputs.flip(3), inputs)
            loss = nn.functional.cross_entropy(net(inputs), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    return net, (mean, std)


@torch.no_grad()
def embed(
    net: EmbeddingNet,
    x: torch.Tensor,
    scaling: tuple[torch.Tensor, torch.Tensor],
    batch_size: int = 1000,
) -> np.ndarray:
    """The ``float32`` embedding ``(N, width)`` of uint8 images ``x``."""
    mean, std = scaling
    chunks = [
        net.features(_normalised(x[i : i + batch_size], mean, std)).numpy()
        for i in range(0, int(x.shape[0]), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)


def cache_key(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_all: torch.Tensor,
    spec: Embedding,
    seed: int,
) -> str:
    """A digest of everything the embedding depends on (not where it is cached)."""
    digest = hashlib.sha256()
    for tensor in (x_train, y_train, x_all):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    trained_by = {
        "epochs": int(spec.epochs),
        "batch_size": int(spec.batch_size),
        "lr": float(spec.lr),
        "width": int(spec.width),
        "seed": int(seed),
    }
    digest.update(json.dumps(trained_by, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def read_cached(path: Path, rows: int) -> np.ndarray:
    """Read a cached embedding, with one clear error if the file is damaged."""
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataFormatError(
            f"cached embedding {path} is unreadable ({exc}); delete it to recompute"
        ) from exc
    if emb.ndim != 2 or emb.shape[0] != rows or not np.isfinite(emb).all():
        raise DataFormatError(
            f"cached embedding {path} has shape {emb.shape} (expected ({rows}, D), "
            "finite); delete it to recompute"
        )
    return np.asarray(emb, dtype=np.float32)


def cached_embedding(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_all: torch.Tensor,
    num_classes: int,
    spec: Embedding,
    seed: int,
) -> np.ndarray:
    """The embedding of ``x_all`` by a network trained on ``(x_train, y_train)``.

    Computed on first use and saved atomically as
    ``spec.cache_dir/embedding-<key>.npy``; later calls (every worker
    process) read the file.
    """
    folder = Path(spec.cache_dir).expanduser()
    path = folder / f"embedding-{cache_key(x_train, y_train, x_all, spec, seed)}.npy"
    if path.is_file():
        return read_cached(path, int(x_all.shape[0]))
    net, scaling = train_embedding_net(x_train, y_train, num_classes, spec, seed)
    emb = embed(net, x_all, scaling)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, emb)
        tmp.replace(path)
    except OSError as exc:
        raise PartitionError(
            f"partition.embedding.cache_dir={folder} is not writable ({exc})"
        ) from exc
    return emb


def reduce_and_cluster(
    features: np.ndarray, pca_dim: int, num_clusters: int, seed: int
) -> np.ndarray:
    """PCA to ``pca_dim``, then k-means as the authors (5 inits, 100 iterations).

    Returns
    -------
    numpy.ndarray
        ``int64`` cluster ids numbered by decreasing cluster size (ties by
        smallest member index), so the numbering is canonical.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    dim = min(pca_dim, features.shape[1], features.shape[0])
    reduced = PCA(n_components=dim, random_state=seed).fit_transform(features)
    labels = KMeans(
        n_clusters=num_clusters, n_init=5, max_iter=100, random_state=seed
    ).fit_predict(reduced)
    return canonical_labels(labels, num_clusters)


def label_report(
    clusters: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[list[list[int]], list[float]]:
    """Each distribution's label histogram and its TV distance from uniform.

    TV(h, u) = 1/2 sum_c |h_c / |h| - 1 / C|: 0 for a label-uniform
    distribution, 1 - 1/C for a single-class one.
    """
    histograms, distances = [], []
    for d in range(int(clusters.max()) + 1):
        counts = np.bincount(labels[clusters == d], minlength=num_classes)
        share = counts / max(int(counts.sum()), 1)
        histograms.append([int(c) for c in counts])
        distances.append(round(0.5 * float(np.abs(share - 1 / num_classes).sum()), 4))
    return histograms, distances
