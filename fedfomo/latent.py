"""Latent non-IID partitions: cluster image features into distributions.

FedFomo (Zhang et al. 2021) clusters embeddings of an ImageNet-pretrained,
CIFAR-fine-tuned VGG-11 (PCA to 256 dimensions, k-means into 5 clusters) and
gives each cluster ("distribution") to a group of clients. No pretrained
network is available offline, so the default features here are the top
principal components of per-channel standardised pixels; a precomputed
embedding (one row per pooled sample, ``.npy``) can be supplied instead, and
with the class label as the "cluster" the split becomes the class-label case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pflcore.data.images import DataFormatError, DatasetNotFoundError, reading
from pflcore.data.partition import PartitionError


def pixel_pca_features(
    x: torch.Tensor,
    dim: int,
    seed: int,
    fit_samples: int = 5000,
    max_side: int = 16,
) -> np.ndarray:
    """Project standardised, downsampled pixels on their top principal components.

    Images larger than ``max_side`` are average-pooled by an integer factor
    first (32 px CIFAR becomes 16 px, 768 values): the leading components
    are low-frequency anyway, and it keeps the cost to seconds, since every
    worker process derives the partition itself.

    Parameters
    ----------
    x : torch.Tensor
        uint8 images ``(N, C, H, W)``.
    dim : int
        Number of components kept.
    seed : int
        Seed of the subsample the components are fitted on.
    fit_samples : int
        Fit the PCA on at most this many images; every image is projected.
    max_side : int
        Downsample to at most this side length before the PCA.

    Returns
    -------
    numpy.ndarray
        ``float32`` features ``(N, dim)``.
    """
    n = int(x.shape[0])
    factor = max(1, int(x.shape[-1]) // max_side)

    def pixels(batch: torch.Tensor) -> torch.Tensor:
        out = batch.to(torch.float32)
        if factor > 1:
            out = torch.nn.functional.avg_pool2d(out, factor)
        return out

    width = int(pixels(x[:1]).numel())
    if not 1 <= dim <= width:
        raise PartitionError(f"pca_dim must lie in 1..{width}, got {dim}")
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=min(n, fit_samples), replace=False))
    fit = pixels(x[torch.from_numpy(fit_idx)])
    mean = fit.mean(dim=(0, 2, 3), keepdim=True)
    std = fit.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    flat = ((fit - mean) / std).reshape(fit.shape[0], -1).double()
    centre = flat.mean(dim=0, keepdim=True)
    cov = (flat - centre).T @ (flat - centre) / max(flat.shape[0] - 1, 1)
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    axes = vectors[:, -dim:].flip(1).float()
    centre_f = centre.float()
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 8192):
        chunk = (pixels(x[start : start + 8192]) - mean) / std
        proj = (chunk.reshape(chunk.shape[0], -1) - centre_f) @ axes
        out[start : start + proj.shape[0]] = proj.numpy()
    return out


def load_embedding(path: str | Path, num_samples: int | None) -> np.ndarray:
    """Read a precomputed embedding, one row per pooled sample, from ``.npy``.

    ``num_samples`` is the row count expected (``None``: not checked here).

    Raises
    ------
    DatasetNotFoundError
        If the file is missing.
    DataFormatError
        If it is not a 2-D array with ``num_samples`` rows.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetNotFoundError(
            f"embedding file not found: looked for {file}. Save one row per pooled "
            "sample (training images in dataset order) with numpy.save."
        )
    with reading(file, "embedding (.npy)"):
        emb = np.load(file, allow_pickle=False)
    if emb.ndim != 2 or (num_samples is not None and emb.shape[0] != num_samples):
        raise DataFormatError(
            f"{file}: expected shape ({num_samples}, D), got {emb.shape}"
        )
    if emb.dtype == np.bool_ or not np.issubdtype(emb.dtype, np.number):
        raise DataFormatError(f"{file}: expected numbers, got dtype {emb.dtype}")
    if emb.shape[1] == 0:
        raise DataFormatError(f"{file}: expected at least one feature, got {emb.shape}")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
        values = np.asarray(emb, dtype=np.float32)
    if not np.isfinite(values).all():
        raise DataFormatError(
            f"{file}: holds {int((~np.isfinite(values)).sum())} values that are "
            "not finite (NaN or infinite) as float32"
        )
    return values


def kmeans(features: np.ndarray, k: int, seed: int, iterations: int = 50) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns a cluster id per row.

    Parameters
    ----------
    features : numpy.ndarray
        ``(N, D)`` points.
    k : int
        Number of clusters.
    seed : int
        Seed of the k-means++ draws.
    iterations : int
        Maximum Lloyd iterations (stops early when assignments settle).

    Returns
    -------
    numpy.ndarray
        ``int64`` cluster ids in ``0..k-1``, numbered by decreasing size
        (ties by smallest member index), so the numbering is canonical.
    """
    n = features.shape[0]
    if not 1 <= k <= n:
        raise PartitionError(f"cannot cut {n} samples into {k} clusters")
    pts = features.astype(np.float64)
    rng = np.random.default_rng(seed)
    sq = (pts**2).sum(axis=1)
    centres = [pts[rng.integers(n)]]
    nearest = sq - 2 * pts @ centres[0] + centres[0] @ centres[0]
    for _ in range(1, k):
        prob = np.clip(nearest, 0, None)
        total = prob.sum()
        pick = rng.choice(n, p=prob / total) if total > 0 else rng.integers(n)
        centres.append(pts[pick])
        dist = sq - 2 * pts @ centres[-1] + centres[-1] @ centres[-1]
        nearest = np.minimum(nearest, dist)
    c = np.stack(centres)
    assign = np.full(n, -1, dtype=np.int64)
    for _ in range(iterations):
        dist = sq[:, None] - 2 * pts @ c.T + (c**2).sum(axis=1)[None, :]
        new = dist.argmin(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = assign == j
            if members.any():
                c[j] = pts[members].mean(axis=0)
    return canonical_labels(assign, k)


def canonical_labels(labels: np.ndarray, k: int) -> np.ndarray:
    """Cluster ids renumbered by decreasing size (ties by smallest member index)."""
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.bincount(labels, minlength=k)
    first = np.array(
        [np.flatnonzero(labels == j)[0] if sizes[j] else labels.size for j in range(k)]
    )
    rank = np.lexsort((first, -sizes))
    relabel = np.empty(k, dtype=np.int64)
    relabel[rank] = np.arange(k)
    return relabel[labels]


def distribution_parts(
    clusters: np.ndarray,
    num_distributions: int,
    num_clients: int,
    labels: np.ndarray,
    seed: int,
) -> list[list[np.ndarray]]:
    """Give each distribution to an equal group of clients, split evenly.

    Client ``j`` belongs to distribution ``j // (num_clients /
    num_distributions)``; each distribution's samples are shuffled and cut
    into near-equal parts, one per client of its group. Each part is
    returned grouped by class so a later train/test split is stratified.

    Parameters
    ----------
    clusters : numpy.ndarray
        Distribution id (``0..num_distributions-1``) of every pooled sample.
    num_distributions : int
        Number of distributions; must divide ``num_clients``.
    num_clients : int
        Number of clients.
    labels : numpy.ndarray
        Label of every pooled sample (for the grouping by class).
    seed : int
        Seed of the shuffles.

    Returns
    -------
    list of list of numpy.ndarray
        ``parts[j]`` lists client ``j``'s index arrays, one per class it holds.
    """
    if num_distributions < 1 or num_clients % num_distributions:
        raise PartitionError(
            f"num_distributions={num_distributions} must divide "
            f"num_clients={num_clients} (each distribution goes to an equal group)"
        )
    per = num_clients // num_distributions
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = []
    for d in range(num_distributions):
        members = rng.permutation(np.flatnonzero(clusters == d))
        for chunk in np.array_split(members, per):
            chunk = np.sort(chunk)
            parts.append([chunk[labels[chunk] == c] for c in np.unique(labels[chunk])])
    return parts
