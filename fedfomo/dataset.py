"""FedFomo's partitions: pathological label shards and latent distributions.

Both start from one pool of images (the training set, optionally with the
official test set) and give each client a disjoint share of it:

* ``pathological``: LG-FedAvg-style shards (``shards_per_client`` shards per
  client, each cut within one class; :func:`fedfomo.splits.shard_parts`).
* ``latent``: the pool is clustered into ``num_distributions`` distributions
  and each distribution is split evenly among ``num_clients /
  num_distributions`` clients (:mod:`fedfomo.latent`). The clustering
  features are ``trained`` (the penultimate layer of a network trained here
  on the pooled training images, PCA to ``pca_dim`` and k-means as the
  authors: :mod:`fedfomo.embedding`), ``pca`` (top principal components of
  standardised pixels), ``embedding`` (a precomputed ``.npy``, e.g. the
  paper's VGG-11 + PCA-256 features) or ``labels`` (each class is a
  distribution: the class-label case, which needs ``num_distributions``
  equal to the class count).

With ``dataset.test_split=carve`` each client's share is then split into
test (``dataset.test_fraction``, stratified by shard or by class) and
training data; with ``official`` (the authors' protocol) the pool is the
training set alone and the official test set is shared out with the same
shard classes or distributions. The training data is split once more, with
a fixed seed, into train and validation (``partition.val_fraction``;
FedFomo's ``--train_split 0.8``). The
validation split is what FedFomo's weights are computed on; every method
trains on the train split only, so all methods see the same data.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedfomo.embedding import (
    cached_embedding,
    label_report,
    reduce_and_cluster,
)
from fedfomo.latent import (
    distribution_parts,
    kmeans,
    load_embedding,
    pixel_pca_features,
)
from fedfomo.splits import (
    cut_shards,
    shard_classes,
    shard_parts,
    split_validation,
)
from pflcore.config.seeds import stream_rng
from pflcore.data.client_data import ClientData
from pflcore.data.digests import note_read
from pflcore.data.images import (
    DataFormatError,
    DatasetNotFoundError,
    ImageData,
    check_images,
    check_labels,
    load_dataset,
)
from pflcore.data.partition import PartitionError, check_min_samples, split_train_test
from pflcore.data.shared_partition import shared_client_data

if TYPE_CHECKING:
    from fedfomo.settings import FedFomoDataset, FomoPartition
    from pflcore.config.shared import SharedPartition

PARTITION_KINDS = ("pathological", "latent")

# Seed streams of the partitions, as offsets from the run seed (fixed: they
# define the partitions): the second draw of parts (the distributions' shares,
# the official test set's shards), the train/test split (or the official test
# set's distribution shares), the validation split.
PARTS_STREAM, SPLIT_STREAM, VALIDATION_STREAM = 1, 2, 3
# Tag of the pooled subset's stream under the run seed (fixed as above).
POOL_SUBSET_TAG = 7
LATENT_FEATURES = ("trained", "pca", "labels", "embedding")
TEST_SPLITS = ("carve", "official")


@dataclass(frozen=True)
class FomoData(ClientData):
    """FedFomo's clients: train, validation and test indices into one pool.

    Attributes
    ----------
    distribution : list of int, optional
        The latent distribution of each client (``None`` for shards).
    """

    distribution: list[int] | None = None

    @classmethod
    def pooled(
        cls,
        data: ImageData,
        x: torch.Tensor,
        y: torch.Tensor,
        splits: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]],
        distribution: list[int] | None,
    ) -> FomoData:
        """The (train, val, test) index lists ``splits`` into the pool ``(x, y)``."""
        indices = dict(zip(("train", "val", "test"), splits, strict=True))
        return cls(data, cls.shared_pool(x, y, indices), indices, distribution)

    @property
    def y(self) -> torch.Tensor:
        """The pooled labels every split indexes."""
        return self.pools["train"][1]

    @property
    def train(self) -> list[np.ndarray]:
        """Per-client training indices."""
        return self.indices["train"]

    @property
    def val(self) -> list[np.ndarray]:
        """Per-client validation indices."""
        return self.indices["val"]

    @property
    def test(self) -> list[np.ndarray]:
        """Per-client test indices."""
        return self.indices["test"]


def pool_subset(size: int, fraction: float, seed: int) -> np.ndarray | None:
    """Sorted, seeded subset of the pool to use (``None``: all of it).

    ``partition.pool_fraction < 1`` keeps that share of the pooled images
    (uniformly at random, before partitioning): a smaller, CPU-sized
    federation over the same images.
    """
    if not 0 < fraction <= 1:
        raise PartitionError(
            f"partition.pool_fraction must lie in (0, 1], got {fraction}"
        )
    if fraction == 1:
        return None
    rng = stream_rng(seed, POOL_SUBSET_TAG)
    return np.sort(rng.choice(size, size=round(fraction * size), replace=False))


def latent_clusters(
    partition: FomoPartition,
    x: torch.Tensor,
    y: np.ndarray,
    num_classes: int,
    seed: int,
    keep: np.ndarray | None = None,
    pool_size: int | None = None,
    train_rows: int | None = None,
) -> np.ndarray:
    """The distribution id of every pooled sample (see the module docstring).

    ``keep`` names the rows of a precomputed embedding (which has one row
    per sample of the whole pool, ``pool_size`` rows) that ``x`` holds.
    ``train_rows``: the leading rows of ``x`` that are training images (the
    ``trained`` embedding learns from those only; default: all). ``partition``:
    the ``partition.*`` settings (``num_distributions``, ``features``,
    ``embedding``, ``embedding_path``, ``pca_dim``).
    """
    k = int(partition.num_distributions)
    features = partition.features
    if features == "trained":
        n = int(x.shape[0]) if train_rows is None else train_rows
        emb = cached_embedding(
            x[:n],
            torch.from_numpy(y[:n]),
            x,
            num_classes,
            partition.embedding,
            seed,
        )
        return reduce_and_cluster(emb, int(partition.pca_dim), k, seed)
    if features == "labels":
        if k != num_classes:
            raise PartitionError(
                f"partition.features=labels makes each class a distribution: "
                f"num_distributions must be {num_classes}, got {k}"
            )
        return y.astype(np.int64)
    if features == "embedding":
        if not partition.embedding_path:
            raise PartitionError(
                "partition.features=embedding needs partition.embedding_path (.npy)"
            )
        total = int(x.shape[0]) if keep is None else pool_size
        emb = load_embedding(partition.embedding_path, total)
        if keep is not None:
            emb = emb[keep]
    else:
        emb = pixel_pca_features(x, int(partition.pca_dim), seed)
    return kmeans(emb, k, seed)


def split_pool(
    parts: list[list[np.ndarray]],
    test_fraction: float,
    val_fraction: float,
    seed: int,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per-client parts to (train, val, test) index lists (``test_split=carve``)."""
    tt = split_train_test(parts, test_fraction, seed + SPLIT_STREAM)
    check_min_samples(tt, min_train=2, min_test=1)
    train, val = _validation(tt.train, val_fraction, seed)
    return train, val, tt.test


def _validation(
    train: list[np.ndarray], val_fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    train, val = split_validation(train, val_fraction, seed + VALIDATION_STREAM)
    for j, v in enumerate(val):
        if val_fraction > 0 and v.size == 0:
            raise PartitionError(f"client {j} gets no validation sample")
    return train, val


def _flat(parts: list[list[np.ndarray]], offset: int = 0) -> list[np.ndarray]:
    return [
        np.sort(np.concatenate(p)) + offset if p else np.zeros(0, np.int64)
        for p in parts
    ]


def load_test_file(
    path: str, root: str, train: ImageData | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``x_test``/``y_test`` from an ``.npz`` (absolute or below ``root``).

    For an npz training source whose test images live in a second file (the
    offline CIFAR-10 copy). Images are returned NCHW uint8, labels int64.
    With ``train``, the images must match its channels and size and the
    labels its classes.
    """
    file = Path(path).expanduser()
    file = file if file.is_absolute() else Path(root).expanduser() / file
    if not file.is_file():
        raise DatasetNotFoundError(f"dataset.test_path not found: looked for {file}")
    try:
        with np.load(file) as archive:
            if not {"x_test", "y_test"} <= set(archive.files):
                raise DataFormatError(
                    f"{file} must contain x_test and y_test; it has "
                    f"{sorted(archive.files)}"
                )
            x, y = np.asarray(archive["x_test"]), np.asarray(archive["y_test"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataFormatError):
            raise
        text = " ".join(str(exc).split())
        raise DataFormatError(
            f"{file}: not a readable .npz ({type(exc).__name__}: {text})"
        ) from exc
    note_read(file)  # provenance: summary.json records its sha256
    check_images(file, "x_test", x)
    if x.ndim == 4 and x.shape[-1] not in (1, 3):
        raise DataFormatError(
            f"{file}: x_test must have shape (N, H, W) or (N, H, W, C), got {x.shape}"
        )
    labels = check_labels(file, "y_test", y, len(x))
    images = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    if train is not None:
        if tuple(images.shape[1:]) != tuple(train.x_train.shape[1:]):
            raise DataFormatError(
                f"{file}: x_test images are {tuple(images.shape[1:])} (C, H, W), the "
                f"training images {tuple(train.x_train.shape[1:])}"
            )
        if int(labels.max()) >= train.num_classes:
            raise DataFormatError(
                f"{file}: y_test holds label {int(labels.max())}, beyond the "
                f"{train.num_classes} classes of the training data"
            )
    return (
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(labels.astype(np.int64)),
    )


def _load(dataset: FedFomoDataset) -> ImageData:
    data = load_dataset(
        dataset.name,
        dataset.root,
        dataset.source,
        dataset.path,
        dataset.download,
    )
    if dataset.test_path:
        x_test, y_test = load_test_file(dataset.test_path, dataset.root, data)
        data = ImageData(
            data.name, data.x_train, data.y_train, x_test, y_test, data.num_classes
        )
    return data


def build_fomo_data(
    dataset: FedFomoDataset,
    partition: FomoPartition,
    num_clients: int,
    seed: int,
    protocol: SharedPartition | None = None,
) -> FomoData:
    """Load the configured dataset and partition it for FedFomo.

    Parameters
    ----------
    dataset : fedfomo.settings.FedFomoDataset
        The ``dataset.*`` settings (``name``, ``root``, ``source``, ``path``,
        ``test_path``, ``download``, ``test_split``, ``pool_test``,
        ``test_fraction``).
    partition : fedfomo.settings.FomoPartition
        The ``partition.*`` settings (``kind``, ``shards_per_client``,
        ``num_distributions``, ``features``, ``embedding``, ``embedding_path``,
        ``pca_dim``, ``val_fraction``, ``pool_fraction``).
    num_clients : int
        Number of clients.
    seed : int
        Partition seed.
    protocol : pflcore.config.shared.SharedPartition, optional
        The ``protocol.*`` settings: with ``protocol.partition`` set, the
        shared protocol's clients (training set only) replace FedFomo's
        partition and ``partition.*`` is unused.
    """
    data = _load(dataset)
    if protocol is not None and protocol.partition is not None:
        shared = shared_client_data(data, num_clients, protocol, seed)
        return FomoData(shared.data, shared.pools, shared.indices, None)
    if dataset.test_split == "official":
        return _official_test_split(data, partition, num_clients, seed)
    if dataset.test_fraction is None:
        raise PartitionError("dataset.test_split=carve needs dataset.test_fraction")
    x, y_t = data.pooled(include_test=bool(dataset.pool_test))
    pool_size = int(x.shape[0])
    keep = pool_subset(pool_size, float(partition.pool_fraction), seed)
    if keep is not None:
        x, y_t = x[torch.from_numpy(keep)], y_t[torch.from_numpy(keep)]
    y = y_t.numpy()
    if num_clients > x.shape[0]:
        raise PartitionError(f"{num_clients} clients but only {x.shape[0]} samples")
    distribution = None
    if partition.kind == "pathological":
        parts = shard_parts(
            y, num_clients, int(partition.shards_per_client), seed, data.num_classes
        )
    elif partition.kind == "latent":
        clusters = latent_clusters(
            partition, x, y, data.num_classes, seed, keep, pool_size
        )
        parts = distribution_parts(
            clusters,
            int(partition.num_distributions),
            num_clients,
            y,
            seed + PARTS_STREAM,
        )
        distribution = _distribution_of(num_clients, partition.num_distributions)
    else:
        raise PartitionError(
            f"partition.kind={partition.kind!r} is not one of {PARTITION_KINDS}"
        )
    train, val, test = split_pool(
        parts,
        float(dataset.test_fraction),
        float(partition.val_fraction),
        seed,
    )
    return FomoData.pooled(data, x, y_t, (train, val, test), distribution)


def _distribution_of(num_clients: int, num_distributions: int) -> list[int]:
    per = num_clients // int(num_distributions)
    return [j // per for j in range(num_clients)]


def _official_test_split(
    data: ImageData, partition: FomoPartition, num_clients: int, seed: int
) -> FomoData:
    """The authors' protocol: train/val from the training set, test from the test set.

    The training pool is partitioned and each client's share split into
    train and validation (``val_fraction``); the official test set is shared
    out the same way (the same shard classes, or the same distributions,
    clustered together with the training images), so each client's test data
    follows its training distribution.
    """
    if data.x_test is None or data.y_test is None:
        raise PartitionError(
            f"dataset.test_split=official but {data.name} has no test split here; "
            "set dataset.test_path or use dataset.test_split=carve"
        )
    fraction = float(partition.pool_fraction)
    pools = []
    for i, (x, y) in enumerate(
        ((data.x_train, data.y_train), (data.x_test, data.y_test))
    ):
        keep = pool_subset(int(x.shape[0]), fraction, seed + i)
        if keep is not None:
            x, y = x[torch.from_numpy(keep)], y[torch.from_numpy(keep)]
        pools.append((x, y))
    (x_tr, y_tr), (x_te, y_te) = pools
    n_train = int(x_tr.shape[0])
    labels_tr, labels_te = y_tr.numpy(), y_te.numpy()
    distribution = None
    if partition.kind == "pathological":
        assignment = shard_classes(
            num_clients, int(partition.shards_per_client), data.num_classes, seed
        )
        train_parts = cut_shards(labels_tr, assignment, seed)
        test_parts = cut_shards(labels_te, assignment, seed + PARTS_STREAM)
    elif partition.kind == "latent":
        x_all = torch.cat([x_tr, x_te])
        labels = np.concatenate([labels_tr, labels_te])
        clusters = latent_clusters(
            partition, x_all, labels, data.num_classes, seed, train_rows=n_train
        )
        k = int(partition.num_distributions)
        train_parts = distribution_parts(
            clusters[:n_train], k, num_clients, labels_tr, seed + PARTS_STREAM
        )
        test_parts = distribution_parts(
            clusters[n_train:], k, num_clients, labels_te, seed + SPLIT_STREAM
        )
        distribution = _distribution_of(num_clients, partition.num_distributions)
    else:
        raise PartitionError(
            f"partition.kind={partition.kind!r} is not one of {PARTITION_KINDS}"
        )
    train, val = _validation(_flat(train_parts), float(partition.val_fraction), seed)
    test = _flat(test_parts, offset=n_train)
    for j, (tr, te) in enumerate(zip(train, test, strict=True)):
        if tr.size < 2 or te.size < 1:
            raise PartitionError(
                f"client {j} gets {tr.size} training and {te.size} test samples"
            )
    x = torch.cat([x_tr, x_te])
    y = torch.cat([y_tr, y_te])
    return FomoData.pooled(data, x, y, (train, val, test), distribution)


@lru_cache(maxsize=2)
def fomo_data(
    dataset: FedFomoDataset,
    partition: FomoPartition,
    num_clients: int,
    seed: int,
    protocol: SharedPartition | None = None,
) -> FomoData:
    """``build_fomo_data``, cached per process (one load per Ray worker).

    The settings groups are frozen dataclasses: equal settings hit the cache.
    """
    return build_fomo_data(dataset, partition, num_clients, seed, protocol)


def distribution_labels(data: FomoData) -> tuple[list[list[int]], list[float]]:
    """Per latent distribution: label histogram and TV distance from uniform.

    Over all the distribution's clients' train, validation and test images.
    """
    if data.distribution is None:
        return [], []
    clusters = np.full(int(data.y.shape[0]), -1, dtype=np.int64)
    for j, d in enumerate(data.distribution):
        for idx in (data.train[j], data.val[j], data.test[j]):
            clusters[idx] = d
    held = clusters >= 0
    return label_report(clusters[held], data.y.numpy()[held], data.data.num_classes)
