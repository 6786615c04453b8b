"""Partition primitives and FedPer's k-classes partition.

Properties are checked from the returned indices and the labels alone (the
class a client holds is read off its samples), not from the code's own
intermediate results.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedper.dataset import partition_k_classes
from pflcore.data.partition import (
    ClientSplit,
    PartitionError,
    assign_class_sets,
    check_min_samples,
    split_classes_among_holders,
    split_train_test,
)

FAST = settings(max_examples=40, deadline=None, database=None)


# --------------------------------------------------------------------------
# helpers (independent bookkeeping)
# --------------------------------------------------------------------------


def _per_client_class_counts(
    split: ClientSplit, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) class counts, computed with numpy from the indices."""
    n = len(split.train)
    train = np.zeros((n, num_classes), np.int64)
    test = np.zeros((n, num_classes), np.int64)
    for j in range(n):
        for c in labels[split.train[j]]:
            train[j, c] += 1
        for c in labels[split.test[j]]:
            test[j, c] += 1
    return train, test


def _all_indices(split: ClientSplit) -> np.ndarray:
    return np.concatenate(
        [np.asarray(a, dtype=np.int64) for a in split.train + split.test]
    )


def _labels_with_counts(counts: list[int], seed: int) -> np.ndarray:
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


@st.composite
def k_class_setting(draw):
    """A setting in which every client surely gets train and test samples."""
    num_classes = draw(st.integers(1, 12))
    num_clients = draw(st.integers(1, 15))
    k = draw(st.integers(1, num_classes))
    # every class has >= 8 samples per client, so each part has >= 8 samples
    # and a test fraction in [0.25, 0.75] leaves >= 2 train (the minimum a
    # BatchNorm network trains on) and >= 1 test.
    counts = draw(
        st.lists(
            st.integers(8 * num_clients, 8 * num_clients + 17),
            min_size=num_classes,
            max_size=num_classes,
        )
    )
    label_seed = draw(st.integers(0, 2**31 - 1))
    fraction = draw(st.sampled_from([0.25, 0.3, 0.5, 0.6, 0.75]))
    seed = draw(st.integers(0, 2**31 - 1))
    mode = draw(st.sampled_from(["random", "balanced"]))
    labels = _labels_with_counts(counts, label_seed)
    return labels, num_classes, num_clients, k, fraction, seed, mode


# --------------------------------------------------------------------------
# FedPer's k-classes partition: properties
# --------------------------------------------------------------------------


@FAST
@given(k_class_setting())
def test_k_class_partition_properties(setting):
    labels, num_classes, num_clients, k, fraction, seed, mode = setting
    split = partition_k_classes(
        labels, num_classes, num_clients, k, fraction, seed, mode
    )

    assert split.num_clients == num_clients
    train, test = _per_client_class_counts(split, labels, num_classes)
    held = (train + test) > 0  # (clients, classes), read off the samples

    for j in range(num_clients):
        train_classes = set(np.flatnonzero(train[j]).tolist())
        test_classes = set(np.flatnonzero(test[j]).tolist())
        # every class had enough samples, so each client holds exactly k classes
        assert len(train_classes) == k
        assert test_classes <= train_classes | test_classes
        assert test_classes == train_classes  # stratified: tests cover the classes
        assert len(test_classes) <= k
        assert split.train[j].size >= 1 and split.test[j].size >= 1

    # indices: disjoint everywhere, each index of a held class used exactly once
    used = _all_indices(split)
    assert np.unique(used).size == used.size
    held_classes = np.flatnonzero(held.any(axis=0))
    expected = np.flatnonzero(np.isin(labels, held_classes))
    np.testing.assert_array_equal(np.sort(used), expected)

    total = np.bincount(labels, minlength=num_classes)
    for c in held_classes:
        sizes = (train + test)[held[:, c], c]
        assert sizes.sum() == total[c]
        assert sizes.max() - sizes.min() <= 1
        # the class is cut into as many near-equal parts as it has holders
        assert set(sizes.tolist()) <= {
            total[c] // sizes.size,
            -(-total[c] // sizes.size),
        }

    # test share of every (client, class) part is round(f * part size)
    for j in range(num_clients):
        for c in np.flatnonzero(held[j]):
            size = int(train[j, c] + test[j, c])
            assert test[j, c] == round(fraction * size)


@FAST
@given(k_class_setting())
def test_k_class_partition_is_deterministic(setting):
    labels, num_classes, num_clients, k, fraction, seed, mode = setting
    a = partition_k_classes(labels, num_classes, num_clients, k, fraction, seed, mode)
    b = partition_k_classes(
        labels.copy(), num_classes, num_clients, k, fraction, seed, mode
    )
    for left, right in zip(a.train + a.test, b.train + b.test, strict=True):
        np.testing.assert_array_equal(left, right)


def test_k_class_partition_differs_across_seeds():
    labels = _labels_with_counts([30] * 10, seed=0)
    a = partition_k_classes(labels, 10, 5, 3, 0.25, seed=0)
    b = partition_k_classes(labels, 10, 5, 3, 0.25, seed=1)
    same = all(
        np.array_equal(x, y)
        for x, y in zip(a.train + a.test, b.train + b.test, strict=True)
    )
    assert not same


def test_random_mode_class_sets_are_k_distinct_sorted_classes():
    sets = assign_class_sets(50, 10, 4, seed=3, mode="random")
    assert len(sets) == 50
    for s in sets:
        assert s.size == 4 and np.unique(s).size == 4
        assert np.all(np.diff(s) > 0)
        assert s.min() >= 0 and s.max() < 10
    # with 50 draws, not every client gets the same set
    assert len({tuple(s.tolist()) for s in sets}) > 1


# --------------------------------------------------------------------------
# balanced mode
# --------------------------------------------------------------------------


@FAST
@given(
    st.integers(1, 12).flatmap(
        lambda c: st.tuples(
            st.just(c), st.integers(1, c), st.integers(1, c), st.integers(0, 1000)
        )
    )
)
def test_balanced_class_sets_follow_the_formula(args):
    num_classes, num_clients, k, seed = args  # num_clients <= num_classes
    sets = assign_class_sets(num_clients, num_classes, k, seed, mode="balanced")
    stride = num_classes // num_clients
    for j, s in enumerate(sets):
        expected = {(j * stride + r) % num_classes for r in range(k)}
        assert set(s.tolist()) == expected
        assert s.size == k


def test_balanced_ten_clients_ten_classes_four_each_hand_worked():
    labels = _labels_with_counts([40] * 10, seed=1)
    split = partition_k_classes(
        labels, 10, 10, 4, 0.25, seed=5, class_assignment="balanced"
    )
    train, test = _per_client_class_counts(split, labels, 10)
    held = (train + test) > 0
    # client j holds j, j+1, j+2, j+3 (mod 10)
    for j in range(10):
        assert set(np.flatnonzero(held[j]).tolist()) == {(j + r) % 10 for r in range(4)}
    # so every class has exactly 4 holders, each with 40 / 4 = 10 samples
    np.testing.assert_array_equal(held.sum(axis=0), np.full(10, 4))
    np.testing.assert_array_equal((train + test)[held], np.full(40, 10))
    # 10 * 0.25 = 2.5 -> round() gives 2 test samples per part
    np.testing.assert_array_equal(test[held], np.full(40, round(2.5)))


def test_balanced_three_clients_ten_classes_hand_worked():
    # C // N = 3: client 0 -> {0, 1}, client 1 -> {3, 4}, client 2 -> {6, 7}
    sets = assign_class_sets(3, 10, 2, seed=0, mode="balanced")
    assert [s.tolist() for s in sets] == [[0, 1], [3, 4], [6, 7]]
    # wrap-around: C=5, N=2, k=4, stride 2 -> client 1 gets {2, 3, 4, 0}
    sets = assign_class_sets(2, 5, 4, seed=0, mode="balanced")
    assert [s.tolist() for s in sets] == [[0, 1, 2, 3], [0, 2, 3, 4]]


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [11, 0, -1])
def test_k_out_of_range_is_rejected_naming_k(k: int):
    labels = _labels_with_counts([10] * 10, seed=0)
    with pytest.raises(PartitionError, match=f"k={k}"):
        partition_k_classes(labels, 10, 3, k, 0.2, seed=0)
    with pytest.raises(PartitionError, match=f"k={k}"):
        assign_class_sets(3, 10, k, seed=0)


def test_partition_error_is_a_value_error():
    assert issubclass(PartitionError, ValueError)


def test_unknown_mode_is_rejected():
    with pytest.raises(PartitionError, match="mode"):
        assign_class_sets(3, 10, 2, seed=0, mode="round-robin")


def test_zero_clients_is_rejected():
    with pytest.raises(PartitionError):
        assign_class_sets(0, 10, 2, seed=0)


def test_too_many_clients_raises_naming_a_client():
    # 2 samples per class, 40 clients holding 1 class each: some part has 0 or
    # 1 sample, so some client has no train or no test sample.
    labels = _labels_with_counts([2] * 10, seed=0)
    with pytest.raises(PartitionError, match=r"client \d+") as info:
        partition_k_classes(labels, 10, 40, 1, 0.5, seed=0)
    assert "too many clients" in str(info.value)


def test_check_min_samples_names_the_first_short_client():
    ok = np.arange(3)
    split = ClientSplit(
        train=[ok, ok + 3, np.zeros(0, np.int64), ok + 6],
        test=[ok + 10, np.zeros(0, np.int64), ok + 13, ok + 16],
    )
    with pytest.raises(PartitionError, match="client 1 ") as info:
        check_min_samples(split)
    assert "0 test" in str(info.value)
    # raising thresholds catches client 0 first
    with pytest.raises(PartitionError, match="client 0 "):
        check_min_samples(split, min_train=4)
    # a split where everyone has enough passes
    check_min_samples(ClientSplit(train=[ok, ok + 3], test=[ok + 6, ok + 9]), 3, 3)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_train_test_rejects_degenerate_fractions(fraction: float):
    parts = [[np.arange(10)]]
    with pytest.raises(PartitionError, match="test_fraction"):
        split_train_test(parts, fraction, seed=0)


def test_split_train_test_per_part_rounding_hand_worked():
    # parts of sizes 4, 7 and 1 with f = 0.3 -> 1.2, 2.1, 0.3 -> 1, 2, 0 tests
    parts = [[np.arange(0, 4), np.arange(10, 17)], [np.array([20])]]
    split = split_train_test(parts, 0.3, seed=0)
    assert np.isin(split.test[0], np.arange(0, 4)).sum() == 1
    assert np.isin(split.test[0], np.arange(10, 17)).sum() == 2
    assert split.test[1].size == 0 and split.train[1].tolist() == [20]
    assert sorted(split.train[0].tolist() + split.test[0].tolist()) == [
        *range(4),
        *range(10, 17),
    ]
    # client with no parts gets empty integer arrays
    empty = split_train_test([[]], 0.5, seed=0)
    assert empty.train[0].size == 0 and empty.test[0].size == 0


# --------------------------------------------------------------------------
# split among holders: arbitrary labels and class sets
# --------------------------------------------------------------------------


@FAST
@given(
    st.integers(1, 8).flatmap(
        lambda c: st.tuples(
            st.just(c),
            st.lists(st.integers(0, c - 1), min_size=1, max_size=120),
            st.lists(
                st.lists(st.integers(0, c - 1), min_size=1, max_size=c, unique=True),
                min_size=1,
                max_size=10,
            ),
            st.integers(0, 2**31 - 1),
        )
    )
)
def test_split_among_holders_with_arbitrary_labels(args):
    num_classes, label_list, set_lists, seed = args
    labels = np.asarray(label_list, dtype=np.int64)
    class_sets = [np.sort(np.asarray(s)) for s in set_lists]
    parts = split_classes_among_holders(labels, class_sets, seed)
    assert len(parts) == len(class_sets)

    holders = {
        c: [j for j, s in enumerate(set_lists) if c in s] for c in range(num_classes)
    }
    seen = []
    for j, client_parts in enumerate(parts):
        for part in client_parts:
            part_labels = set(labels[part].tolist())
            assert len(part_labels) <= 1  # each part is one class
            assert part_labels <= set(set_lists[j])
            seen.extend(part.tolist())
    assert len(seen) == len(set(seen))  # disjoint
    held = [c for c in range(num_classes) if holders[c]]
    assert sorted(seen) == np.flatnonzero(np.isin(labels, held)).tolist()
    for c in held:
        sizes = [
            int(np.sum(labels[np.concatenate(parts[j] or [np.zeros(0, int)])] == c))
            for j in holders[c]
        ]
        assert sum(sizes) == int(np.sum(labels == c))
        assert max(sizes) - min(sizes) <= 1

    again = split_classes_among_holders(labels, class_sets, seed)
    for a, b in zip(parts, again, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_hand_worked_three_clients_two_classes():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    class_sets = [np.array([0]), np.array([0, 1]), np.array([1])]
    parts = split_classes_among_holders(labels, class_sets, seed=0)

    def by_class(j):
        idx = np.concatenate(parts[j])
        return {c: sorted(idx[labels[idx] == c].tolist()) for c in (0, 1)}

    c0, c1, c2 = by_class(0), by_class(1), by_class(2)
    assert len(c0[0]) == 2 and c0[1] == []
    assert len(c1[0]) == 2 and len(c1[1]) == 2
    assert c2[0] == [] and len(c2[1]) == 2
    assert sorted(c0[0] + c1[0]) == [0, 1, 2, 3]
    assert sorted(c1[1] + c2[1]) == [4, 5, 6, 7]


def test_class_without_holder_stays_unused():
    labels = np.array([0, 1, 2, 2, 1, 0, 2])
    parts = split_classes_among_holders(labels, [np.array([0]), np.array([0])], seed=1)
    used = sorted(np.concatenate(parts[0] + parts[1]).tolist())
    assert used == [0, 5]


# --------------------------------------------------------------------------
# ClientSplit.class_counts
# --------------------------------------------------------------------------


def test_client_split_class_counts_hand_worked():
    labels = np.array([0, 1, 1, 2, 2, 2])
    split = ClientSplit(
        train=[np.array([0, 3]), np.array([1])], test=[np.array([4]), np.array([2, 5])]
    )
    counts = split.class_counts(labels, 4)
    assert counts.shape == (2, 2, 4)
    np.testing.assert_array_equal(counts[0], [[1, 0, 1, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(counts[1], [[0, 1, 0, 0], [0, 1, 1, 0]])


def test_stratified_subset_keeps_the_share_of_every_class_and_is_seeded():
    from pflcore.data.partition import stratified_subset

    labels = np.repeat(np.arange(4), [100, 50, 10, 1])
    kept = stratified_subset(labels, 0.2, seed=3)
    assert np.bincount(labels[kept]).tolist() == [20, 10, 2, 1]  # at least one each
    assert np.array_equal(kept, np.unique(kept))  # sorted, no repeats
    assert np.array_equal(kept, stratified_subset(labels, 0.2, seed=3))
    assert not np.array_equal(kept, stratified_subset(labels, 0.2, seed=4))
    assert np.array_equal(stratified_subset(labels, 1.0, seed=0), np.arange(161))
    with pytest.raises(PartitionError):
        stratified_subset(labels, 0.0, seed=0)


def test_fedper_subset_fraction_shrinks_every_class_before_partitioning(tmp_path):
    from fedper.dataset import build_federated_data
    from fedper.settings import FedPerDataset
    from tests.fakedata import write_cifar10

    write_cifar10(tmp_path, per_batch=100, test=100)
    dataset = {
        "name": "cifar10",
        "root": str(tmp_path),
        "source": "default",
        "path": None,
        "download": False,
        "pool_test": True,
        "test_fraction": 0.2,
        "classes_per_client": 10,
        "class_assignment": "random",
        "image_size": 32,
        "crop_padding": 0,
        "flip": False,
    }
    full = build_federated_data(FedPerDataset(**dataset), 2, seed=0)
    half = build_federated_data(
        FedPerDataset(**dataset, subset_fraction=0.5), 2, seed=0
    )
    kept = half.class_counts().sum(axis=(0, 1))
    total = full.class_counts().sum(axis=(0, 1))
    assert total.sum() == 600
    expected = np.maximum(1, np.round(0.5 * total))
    assert np.array_equal(kept, expected)
