"""EMNIST in both on-disk forms, and the two papers' partitions against their rules."""

import numpy as np
import pytest

from perfedavg.dataset import partition_dirichlet, partition_fallah
from perfedavg.emnist import load_emnist
from pflcore.data.images import DataFormatError, DatasetNotFoundError
from pflcore.data.partition import PartitionError
from tests.fake_emnist import write_emnist_idx, write_emnist_npz


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_are_turned_upright_and_labels_start_at_zero(tmp_path, gz):
    written = write_emnist_idx(tmp_path, gz=gz)
    data = load_emnist(str(tmp_path), "letters", "default")
    assert data.num_classes == 26
    assert data.x_train.shape == (520, 1, 28, 28)
    np.testing.assert_array_equal(data.x_train[:, 0].numpy(), written["x_train"])
    np.testing.assert_array_equal(data.y_train.numpy(), written["y_train"] - 1)
    np.testing.assert_array_equal(data.x_test[:, 0].numpy(), written["x_test"])
    assert data.y_train.min() == 0 and data.y_train.max() == 25
    # The mark is a bar along the top rows: upright, row 0 is bright, column 0 is not.
    assert (data.x_train[:, 0, 0, :2] == 255).all()
    assert not (data.x_train[:, 0, 5:, 0] == 255).any()


def test_npz_copy_upright_loads_the_same_as_the_idx_files(tmp_path):
    write_emnist_idx(tmp_path / "idx")
    write_emnist_npz(tmp_path / "emnist_letters" / "emnist_letters.npz")
    from_idx = load_emnist(str(tmp_path / "idx"), "letters", "default")
    from_npz = load_emnist(
        str(tmp_path), "letters", "npz", "emnist_letters/emnist_letters.npz"
    )
    assert np.array_equal(from_idx.x_train.numpy(), from_npz.x_train.numpy())
    assert np.array_equal(from_idx.y_test.numpy(), from_npz.y_test.numpy())
    # declaring the upright copy as transposed would flip it
    flipped = load_emnist(
        str(tmp_path),
        "letters",
        "npz",
        "emnist_letters/emnist_letters.npz",
        "transposed",
    )
    assert not np.array_equal(flipped.x_train.numpy(), from_npz.x_train.numpy())


def test_missing_and_malformed_emnist_fail_clearly(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="EMNIST/raw/emnist-letters-train"):
        load_emnist(str(tmp_path), "letters", "default")
    arrays = write_emnist_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "zero.npz", **{**arrays, "y_train": arrays["y_train"] - 1})
    with pytest.raises(DataFormatError, match=r"labels must lie in 1\.\.26"):
        load_emnist(str(tmp_path), "letters", "npz", "zero.npz")


def labels_10(per_class: int) -> np.ndarray:
    return np.repeat(np.arange(10), per_class)


def test_fallah_partition_follows_the_paper():
    labels = labels_10(400)
    a, n = 20, 10
    split = partition_fallah(labels, 10, n, a, test_ratio=0.25, seed=1)
    counts = split.class_counts(labels, 10)
    for j in range(n // 2):  # a images of each of the first five classes
        assert counts[j, 0, :5].tolist() == [a] * 5 and counts[j, 0, 5:].sum() == 0
        assert counts[j, 1, :5].tolist() == [5] * 5
    for j in range(n // 2, n):  # a/2 of one first-half class, 2a of one second-half
        train = counts[j, 0]
        assert sorted(train[train > 0].tolist()) == [a // 2, 2 * a]
        assert train[:5].sum() == a // 2 and train[5:].sum() == 2 * a
        assert counts[j, 1][:5].sum() == round(0.25 * a / 2)
        assert counts[j, 1][5:].sum() == round(0.25 * 2 * a)
    everything = np.concatenate(split.train + split.test)
    assert np.unique(everything).size == everything.size  # no image used twice
    # the second-half users cover every first-half and every second-half class
    second = counts[n // 2 :, 0]
    assert ((second[:, :5] > 0).sum(axis=0) == 1).all()
    assert ((second[:, 5:] > 0).sum(axis=0) == 1).all()


def test_fallah_partition_is_a_function_of_the_seed():
    labels = labels_10(400)
    one = partition_fallah(labels, 10, 8, 10, 0.25, seed=4)
    two = partition_fallah(labels, 10, 8, 10, 0.25, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(one.train, two.train, strict=True))


def test_fallah_partition_refuses_more_than_the_data_holds():
    with pytest.raises(PartitionError, match="class 0 has 100 samples"):
        partition_fallah(labels_10(100), 10, 50, 196, 0.25, seed=0)


def test_dirichlet_partition_sizes_disjointness_and_skew():
    labels = labels_10(300)
    split = partition_dirichlet(labels, 10, 20, 100, 0.3, 0.2, seed=2)
    sizes = [tr.size + te.size for tr, te in zip(split.train, split.test, strict=True)]
    assert sizes == [100] * 20
    assert all(te.size >= 15 for te in split.test)  # about 20 % held out
    everything = np.concatenate(split.train + split.test)
    assert np.unique(everything).size == everything.size
    counts = split.class_counts(labels, 10).sum(axis=1)
    # alpha=0.3 gives skewed mixes: on average the top class holds far over 10 %
    assert (counts.max(axis=1) / 100).mean() > 0.3
    with pytest.raises(PartitionError, match="exceed"):
        partition_dirichlet(labels, 10, 40, 100, 0.3, 0.2, seed=2)
