"""Equal-sized label-skewed clients and the per-client three-way split: invariants."""

from __future__ import annotations

import numpy as np
import pytest

from pflcore.data.label_skew import (
    ClassPools,
    class_parts,
    dirichlet_parts,
    split_three_ways,
)
from pflcore.data.partition import PartitionError

LABELS = np.repeat(np.arange(10), 200)  # 10 classes x 200 images


def flat(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.concatenate(p) for p in parts]


@pytest.mark.parametrize(
    ("clients", "k", "size"), [(20, 2, 50), (7, 3, 31), (4, 10, 40)]
)
def test_class_parts_give_k_distinct_classes_in_equal_shares(clients, k, size):
    parts = class_parts(LABELS, 10, clients, size, k, seed=5)
    holders = np.zeros(10, dtype=int)
    for client in parts:
        classes = [set(LABELS[p].tolist()) for p in client]
        assert all(len(c) == 1 for c in classes)  # one class per part
        held = [c.pop() for c in classes]
        assert len(set(held)) == k
        shares = sorted(p.size for p in client)
        assert sum(shares) == size and shares[-1] - shares[0] <= 1
        holders[held] += 1
    assert holders.max() - holders.min() <= 1
    everything = np.concatenate(flat(parts))
    assert np.unique(everything).size == everything.size  # no image twice


def test_class_parts_are_a_function_of_the_seed():
    a = flat(class_parts(LABELS, 10, 6, 20, 2, seed=1))
    b = flat(class_parts(LABELS, 10, 6, 20, 2, seed=1))
    c = flat(class_parts(LABELS, 10, 6, 20, 2, seed=2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_a_class_that_runs_out_is_named():
    with pytest.raises(PartitionError, match=r"class \d has 200 samples"):
        class_parts(LABELS, 10, 5, 300, 1, seed=0)  # one class for 300 images


@pytest.mark.parametrize(
    ("k", "size", "words"),
    [(0, 10, "classes_per_client"), (11, 20, "classes_per_client"),
     (3, 2, "at least classes_per_client"), (1, 1, "samples_per_client")],
)  # fmt: skip
def test_impossible_class_settings_are_refused(k, size, words):
    with pytest.raises(PartitionError, match=words):
        class_parts(LABELS, 10, 3, size, k, seed=0)


def test_dirichlet_parts_have_the_size_and_the_skew_alpha_asks():
    def parts(alpha: float) -> list[np.ndarray]:
        rng, pools = (
            np.random.default_rng(3),
            ClassPools(LABELS, 10, np.random.default_rng(4)),
        )
        return flat(dirichlet_parts(LABELS, 10, 20, 60, alpha, rng, pools))

    skewed, even = parts(0.01), parts(1e4)
    for client in skewed + even:
        assert client.size == 60
    top = [np.bincount(LABELS[c], minlength=10).max() / 60 for c in skewed]
    spread = [np.bincount(LABELS[c], minlength=10).max() / 60 for c in even]
    assert np.median(top) > 0.9  # one class dominates
    assert max(spread) < 0.3  # close to 6 of each
    everything = np.concatenate(skewed)
    assert np.unique(everything).size == everything.size


def test_dirichlet_takes_other_classes_when_the_mix_runs_out():
    labels = np.repeat(np.arange(2), 30)
    rng, pools = (
        np.random.default_rng(0),
        ClassPools(labels, 2, np.random.default_rng(0)),
    )
    parts = flat(dirichlet_parts(labels, 2, 2, 30, 0.001, rng, pools))
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(60))


def test_split_three_ways_by_hand():
    part = np.arange(10)  # one client, one part of 10: 2 test, 1 val, 7 train
    cut = split_three_ways([[part]], val_fraction=0.1, test_fraction=0.2, seed=0)
    assert [cut[s][0].size for s in ("train", "val", "test")] == [7, 1, 2]
    shuffled = np.random.default_rng([0, 0]).permutation(part)
    assert np.array_equal(cut["test"][0], np.sort(shuffled[:2]))
    assert np.array_equal(cut["val"][0], np.sort(shuffled[2:3]))
    assert np.array_equal(cut["train"][0], np.sort(shuffled[3:]))


def test_split_three_ways_keeps_each_clients_mix_and_covers_it():
    parts = class_parts(LABELS, 10, 8, 100, 2, seed=9)
    cut = split_three_ways(parts, 0.2, 0.2, seed=9)
    for j, client in enumerate(parts):
        mine = np.sort(np.concatenate(client))
        pieces = [cut[s][j] for s in ("train", "val", "test")]
        assert np.array_equal(np.sort(np.concatenate(pieces)), mine)
        assert sum(p.size for p in pieces) == mine.size
        classes = set(LABELS[mine].tolist())
        for piece in pieces:
            assert set(LABELS[piece].tolist()) == classes  # 50 per class: every split
            assert np.all(np.diff(piece) > 0)


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_split_fractions_out_of_range_are_refused(val, test):
    with pytest.raises(PartitionError, match="fraction"):
        split_three_ways([[np.arange(10)]], val, test, seed=0)


def test_a_client_left_without_a_split_is_named():
    with pytest.raises(PartitionError, match="client 1 gets no val samples"):
        split_three_ways([[np.arange(20)], [np.arange(20, 22)]], 0.1, 0.3, seed=0)
