"""pFedHN's partition (authors' ``experiments/dataset.py``) and client data.

1. Every class gets ``s = classes_per_client * N // C + 1`` slots, each with a
   share drawn from U(low, high) and normalised within the class.
2. Clients, in order, draw each of their classes uniformly among the classes
   with the most slots left; a pick consumes one slot and its share (the
   last one left, as the authors' ``list.pop()``).
3. In each of train, validation and test separately a client takes
   ``int(n_c * p)`` of the (shuffled) samples of each of its classes, where
   ``n_c`` is the class count in that split; so all three share its class mix.

Splits: validation is ``val_size`` random images held out of the training
set. The test split is the official test set (``test_source: official``) or
``test_size`` further images held out of the training set
(``test_source: train``), for sources that ship no exact test set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from pfedhn.novel import distances, draw_mixes, take_for_novel
from pfedhn.settings import HNPartition, Novel, PFedHNDataset
from pflcore.config.settings import parse, to_dict
from pflcore.config.shared import SharedPartition
from pflcore.data.client_data import ClientData
from pflcore.data.images import ImageData, load_dataset
from pflcore.data.partition import PartitionError
from pflcore.data.shared_partition import shared_client_data
from pflcore.local.transforms import BatchTransform

SPLITS = ("train", "val", "test")

# Seed streams of the partition, as offsets from the run seed (fixed: they
# define the partitions): split s of SPLITS is cut with seed + CUT_STREAM + s.
CUT_STREAM = 1

# The authors' normalisation constants (torchvision Normalize in dataset.py).
PAPER_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
}


@dataclass(frozen=True)
class ClassAssignment:
    """Each client's classes and its share of each.

    Attributes
    ----------
    classes : list of list of int
        ``classes[j]``: client ``j``'s classes, in the order drawn.
    shares : list of list of float
        ``shares[j][i]``: the fraction of class ``classes[j][i]`` it takes.
    """

    classes: list[list[int]]
    shares: list[list[float]]


def assign_classes(
    num_clients: int,
    num_classes: int,
    classes_per_client: int,
    seed: int,
    low: float = 0.4,
    high: float = 0.6,
) -> ClassAssignment:
    """Steps 1 and 2 of the module docstring (authors' ``gen_classes_per_node``).

    Raises
    ------
    PartitionError
        On a class count or share range that cannot work.
    """
    if not 1 <= classes_per_client <= num_classes:
        raise PartitionError(
            f"classes_per_client={classes_per_client} must lie in 1..{num_classes}"
        )
    if not 0 < low <= high:
        raise PartitionError(
            f"share range must satisfy 0 < low <= high, got {low}, {high}"
        )
    rng = np.random.default_rng(seed)
    slots = classes_per_client * num_clients // num_classes + 1
    left = np.full(num_classes, slots)
    pools: list[list[float]] = []
    for _ in range(num_classes):
        p = rng.uniform(low, high, size=slots)
        pools.append((p / p.sum()).tolist())
    classes, shares = [], []
    for _ in range(num_clients):
        mine = []
        for _ in range(classes_per_client):
            fullest = np.flatnonzero(left == left.max())
            c = int(rng.choice(fullest))
            left[c] -= 1
            mine.append(c)
        classes.append(mine)
        shares.append([pools[c].pop() for c in mine])
    return ClassAssignment(classes, shares)


def cut_split(
    labels: np.ndarray, assignment: ClassAssignment, num_classes: int, seed: int
) -> list[np.ndarray]:
    """Step 3 for one split: each client's indices into ``labels``."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=num_classes)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    out = []
    for classes, shares in zip(assignment.classes, assignment.shares, strict=True):
        mine = []
        for c, p in zip(classes, shares, strict=True):
            take = int(counts[c] * p)
            mine.append(pools[c][:take])
            pools[c] = pools[c][take:]
        out.append(np.sort(np.concatenate(mine)).astype(np.int64))
    return out


@dataclass(frozen=True)
class PFedHNData(ClientData):
    """pFedHN's clients: train, validation and test pools, each cut per client.

    Attributes
    ----------
    assignment : ClassAssignment
        Each client's classes and its share of each.
    novel : tuple of dict
        Novel clients drawn by :mod:`pfedhn.novel` (empty without
        ``novel.dirichlet``): ``partition_id``, ``concentration``, ``mix``,
        ``tv_population``, ``tv_nearest``.
    """

    assignment: ClassAssignment
    novel: tuple[dict[str, Any], ...] = ()


def hold_out(n: int, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Cut ``range(n)`` at random into parts of ``sizes`` plus the rest (last)."""
    if sum(sizes) >= n:
        raise PartitionError(
            f"cannot hold out {sum(sizes)} of {n} training images and keep any "
            "to train on"
        )
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum(sizes)
    parts = np.split(order, cuts)
    return [np.sort(p) for p in parts[:-1]] + [np.sort(parts[-1])]


def shared_data(
    data: ImageData, num_clients: int, protocol: SharedPartition, seed: int
) -> PFedHNData:
    """The shared protocol's clients, with each one's classes and their shares."""
    shared = shared_client_data(data, num_clients, protocol, seed)
    counts = shared.class_counts(("train",))[:, 0]
    totals = np.maximum(counts.sum(axis=0), 1)
    classes = [np.flatnonzero(row).tolist() for row in counts]
    shares = [
        [float(row[c] / totals[c]) for c in held]
        for row, held in zip(counts, classes, strict=True)
    ]
    assignment = ClassAssignment(classes, shares)
    return PFedHNData(shared.data, shared.pools, shared.indices, assignment)


def build_data(
    dataset: PFedHNDataset,
    partition: HNPartition,
    num_clients: int,
    seed: int,
    novel: Novel | None = None,
    protocol: SharedPartition | None = None,
) -> PFedHNData:
    """Load the configured dataset and partition it (see the module docstring).

    Parameters
    ----------
    dataset : PFedHNDataset
        The ``dataset`` settings (``name``, ``root``, ``source``, ``path``,
        ``download`` are read).
    partition : HNPartition
        ``classes_per_client``, ``low``, ``high``, ``val_size``,
        ``test_source`` (``official`` or ``train``), ``test_size``.
    num_clients : int
        Number of clients N (novel clients included).
    seed : int
        Partition seed.
    novel : Novel, optional
        The ``novel`` settings. With a non-empty ``dirichlet`` the last
        ``len(dirichlet) * per_concentration`` clients are drawn by
        :mod:`pfedhn.novel` and the authors' rule partitions the others.
    protocol : pflcore.config.shared.SharedPartition, optional
        The ``protocol.*`` settings: with ``protocol.partition`` set, the
        shared protocol's clients (training set only) replace the authors'
        partition; ``partition.*`` and ``novel.dirichlet`` are then unused.

    Raises
    ------
    PartitionError
        If the splits cannot be made or a client gets no sample in a split.
    """
    data = load_dataset(
        dataset.name,
        dataset.root,
        dataset.source,
        dataset.path,
        dataset.download,
    )
    if protocol is not None and protocol.partition is not None:
        return shared_data(data, num_clients, protocol, seed)
    x, y = data.x_train, data.y_train
    from_train = partition.test_source == "train"
    if not from_train and data.x_test is None:
        raise PartitionError(
            f"dataset {dataset.name!r} from this source has no test split; "
            "set partition.test_source=train to hold the test set out of the "
            "training set"
        )
    sizes = [int(partition.val_size)]
    if from_train:
        sizes.append(int(partition.test_size))
    parts = hold_out(x.shape[0], sizes, seed)
    pools = {}
    val_idx = torch.from_numpy(parts[0])
    train_idx = torch.from_numpy(parts[-1])
    pools["train"] = (x[train_idx], y[train_idx])
    pools["val"] = (x[val_idx], y[val_idx])
    if from_train:
        test_idx = torch.from_numpy(parts[1])
        pools["test"] = (x[test_idx], y[test_idx])
    else:
        assert data.x_test is not None and data.y_test is not None
        pools["test"] = (data.x_test, data.y_test)
    concentrations = list(novel.dirichlet) if novel is not None else []
    mixes = draw_mixes(
        concentrations,
        int(novel.per_concentration) if novel is not None else 1,
        data.num_classes,
        seed,
    )
    trained = num_clients - len(mixes)
    if trained < 1:
        raise PartitionError(
            f"{len(mixes)} novel clients leave none of num_clients={num_clients} "
            "to train"
        )
    assignment = assign_classes(
        trained,
        data.num_classes,
        int(partition.classes_per_client),
        seed,
        float(partition.low),
        float(partition.high),
    )
    indices = {}
    for s, split in enumerate(SPLITS):
        labels = pools[split][1].numpy()
        taken: list[np.ndarray] = []
        if mixes:
            assert novel is not None
            size = int(getattr(novel.sizes, split))
            taken = take_for_novel(labels, mixes, size, split, seed)
            # the authors' cut sees the taken images as a class no client has
            labels = labels.copy()
            labels[np.concatenate(taken)] = data.num_classes
        cut = cut_split(labels, assignment, data.num_classes, seed + CUT_STREAM + s)
        indices[split] = cut + taken
    records: tuple[dict[str, Any], ...] = ()
    if mixes:
        train_labels = pools["train"][1].numpy()
        tv = distances(
            [train_labels[i] for i in indices["train"][trained:]],
            [train_labels[i] for i in indices["train"][:trained]],
            data.num_classes,
        )
        records = tuple(
            {
                "partition_id": trained + k,
                "concentration": alpha,
                "mix": [round(float(v), 6) for v in mix],
                "tv_population": tv[k][0],
                "tv_nearest": tv[k][1],
            }
            for k, (alpha, mix) in enumerate(mixes)
        )
        novel_classes = [
            sorted(set(train_labels[i].tolist())) for i in indices["train"][trained:]
        ]
        assignment = ClassAssignment(
            assignment.classes + novel_classes,
            assignment.shares
            + [
                [float(m[c]) for c in cls]
                for cls, (_, m) in zip(novel_classes, mixes, strict=True)
            ],
        )
    for split in SPLITS:
        for j, idx in enumerate(indices[split]):
            if idx.size == 0:
                raise PartitionError(
                    f"client {j} gets no {split} sample: too many clients for this "
                    "dataset and partition"
                )
    return PFedHNData(data, pools, indices, assignment, records)


def make_transform(data: ImageData, image_size: int, normalize: str) -> BatchTransform:
    """Normalisation only (the paper uses no augmentation).

    Parameters
    ----------
    data : ImageData
        The loaded dataset (its name and training images' statistics).
    image_size : int
        ``dataset.image_size``: the side batches are resized to.
    normalize : str
        ``paper`` uses the authors' constants where the dataset has them and
        the training images' own statistics otherwise; ``data`` always uses
        the training images' statistics.
    """
    if normalize == "paper" and data.name in PAPER_STATS:
        mean, std = PAPER_STATS[data.name]
    else:
        mean, std = data.channel_stats()
    return BatchTransform(mean, std, image_size=int(image_size))


@lru_cache(maxsize=2)
def _cached(key: str) -> PFedHNData:
    spec = json.loads(key)
    novel = spec.get("novel")
    return build_data(
        parse(PFedHNDataset, spec["dataset"], "dataset."),
        parse(HNPartition, spec["partition"], "partition."),
        spec["num_clients"],
        spec["seed"],
        parse(Novel, novel, "novel.") if novel is not None else None,
        parse(SharedPartition, spec["protocol"], "protocol.")
        if "protocol" in spec
        else None,
    )


def cached_data(
    dataset: PFedHNDataset,
    partition: HNPartition,
    num_clients: int,
    seed: int,
    novel: Novel,
    protocol: SharedPartition | None = None,
) -> PFedHNData:
    """``build_data``, cached per process by the settings that define the data.

    ``novel`` counts only with ``novel.dirichlet`` (the drawn novel clients
    are then part of the partition), so runs that differ in nothing else
    share one load.
    """
    key: dict[str, Any] = {
        "dataset": to_dict(dataset),
        "partition": to_dict(partition),
        "num_clients": num_clients,
        "seed": seed,
    }
    if novel.dirichlet:
        key["novel"] = to_dict(novel)
    if protocol is not None and protocol.partition is not None:
        key["protocol"] = to_dict(protocol)
    return _cached(json.dumps(key, sort_keys=True))
