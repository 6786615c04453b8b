"""pFedHN's partition (authors' dataset.py) and split hold-outs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pfedhn.dataset import assign_classes, build_data, cut_split, hold_out
from pfedhn.settings import HNPartition, PFedHNDataset
from pflcore.config.settings import parse
from pflcore.data.partition import PartitionError
from tests.fakedata import write_mnist


def mnist_settings(root) -> PFedHNDataset:
    """``dataset.*`` of the fake MNIST at ``root``."""
    return parse(
        PFedHNDataset,
        {
            "name": "mnist",
            "root": str(root),
            "source": "default",
            "path": None,
            "download": False,
            "image_size": 28,
            "crop_padding": 0,
            "flip": False,
        },
    )


@pytest.mark.parametrize(
    ("n", "classes", "k"), [(50, 10, 2), (10, 10, 2), (100, 10, 2), (50, 100, 10)]
)
def test_assignment_invariants(n, classes, k):
    a = assign_classes(n, classes, k, seed=1)
    slots = k * n // classes + 1
    picks = np.bincount(np.concatenate(a.classes), minlength=classes)
    assert len(a.classes) == n and all(len(c) == k for c in a.classes)
    # Clients pick among the classes with the most slots left: usage stays within one.
    assert picks.max() <= slots and picks.max() - picks.min() <= 1
    for j in range(n):
        assert len(set(a.classes[j])) == k  # distinct classes per client
    # Each class's shares come from its own normalised U(0.4, 0.6) draws: a class
    # used by every one of its slots has shares summing to 1, each in the range
    # 0.4/(0.6 (s-1) + 0.4) .. 0.6/(0.4 (s-1) + 0.6).
    shares = np.concatenate(a.shares)
    low, high = 0.4 / (0.6 * (slots - 1) + 0.4), 0.6 / (0.4 * (slots - 1) + 0.6)
    assert shares.min() >= low - 1e-12 and shares.max() <= high + 1e-12
    per_class = np.zeros(classes)
    for cs, ps in zip(a.classes, a.shares, strict=True):
        for c, p in zip(cs, ps, strict=True):
            per_class[c] += p
    assert per_class.max() <= 1 + 1e-9
    assert assign_classes(n, classes, k, seed=1) == a  # pure function of the seed


def test_cut_split_hand_worked():
    # Two clients, class 0 shared with shares 0.25 / 0.75 of its 8 samples, class 1
    # (4 samples) taken half by client 0.
    from pfedhn.dataset import ClassAssignment

    labels = np.array([0] * 8 + [1] * 4)
    a = ClassAssignment(classes=[[0, 1], [0]], shares=[[0.25, 0.5], [0.75]])
    parts = cut_split(labels, a, 2, seed=0)
    assert [np.bincount(labels[p], minlength=2).tolist() for p in parts] == [
        [2, 2],
        [6, 0],
    ]
    assert not set(parts[0]) & set(parts[1])


def test_same_class_mix_in_train_val_and_test(tmp_path):
    write_mnist(tmp_path, train=3000, test=600)
    dataset = mnist_settings(tmp_path)
    partition = parse(
        HNPartition,
        {
            "classes_per_client": 2,
            "low": 0.4,
            "high": 0.6,
            "val_size": 600,
            "test_source": "official",
            "test_size": 1,
        },
    )
    data = build_data(dataset, partition, num_clients=8, seed=3)
    assert {s: len(data.pools[s][0]) for s in data.pools} == {
        "train": 2400,
        "val": 600,
        "test": 600,
    }
    counts = data.class_counts(("train", "val", "test"))
    for j in range(8):
        present = [set(np.flatnonzero(counts[j, s])) for s in range(3)]
        assert present[0] == present[1] == present[2] == set(data.assignment.classes[j])
        # int(n_c * p) of each class in each split
        for s, split in enumerate(("train", "val", "test")):
            y = data.pools[split][1].numpy()
            for c, p in zip(
                data.assignment.classes[j], data.assignment.shares[j], strict=True
            ):
                assert counts[j, s, c] == int((y == c).sum() * p)
    for split in ("train", "val", "test"):
        everything = np.concatenate(data.indices[split])
        assert everything.size == np.unique(everything).size  # no sample twice
    x, y = data.split_of(0, "val")
    assert (
        x.dtype == torch.uint8
        and x.shape[1:] == (1, 28, 28)
        and y.numel() == counts[0, 1].sum()
    )


def test_test_pool_from_training_images(tmp_path):
    written = write_mnist(tmp_path, train=2000, test=100)
    dataset = mnist_settings(tmp_path)
    partition = parse(
        HNPartition,
        {
            "classes_per_client": 2,
            "low": 0.4,
            "high": 0.6,
            "val_size": 300,
            "test_source": "train",
            "test_size": 500,
        },
    )
    data = build_data(dataset, partition, num_clients=5, seed=0)
    sizes = {s: len(data.pools[s][0]) for s in data.pools}
    assert sizes == {"train": 1200, "val": 300, "test": 500}
    # The three pools are disjoint pieces of the training images (official test unused).
    pooled = torch.cat([data.pools[s][0] for s in ("train", "val", "test")]).reshape(
        2000, -1
    )
    original = torch.from_numpy(written["x_train"]).reshape(2000, -1)
    key = lambda t: sorted(map(bytes, t.numpy()))  # noqa: E731
    assert key(pooled) == key(original)


def test_bad_settings_fail_clearly(tmp_path):
    with pytest.raises(PartitionError, match="classes_per_client"):
        assign_classes(5, 10, 11, seed=0)
    with pytest.raises(PartitionError, match="hold out"):
        hold_out(100, [60, 50], seed=0)
