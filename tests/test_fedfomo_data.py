"""FedFomo's partitions: shards, latent distributions, and the fixed 80/20 split."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfomo.dataset import build_fomo_data
from fedfomo.latent import distribution_parts, kmeans, pixel_pca_features
from fedfomo.settings import FedFomoDataset, FomoPartition
from fedfomo.splits import shard_classes, shard_parts, split_validation
from pflcore.config.settings import parse
from pflcore.data.partition import PartitionError
from tests.fakedata import write_cifar10


def test_validation_split_is_disjoint_80_20_and_fixed():
    indices = [np.arange(100), np.arange(100, 150) * 3, np.array([7, 9])]
    train, val = split_validation(indices, 0.2, seed=4)
    for idx, tr, va in zip(indices, train, val, strict=True):
        assert np.intersect1d(tr, va).size == 0
        assert np.array_equal(np.sort(np.concatenate([tr, va])), np.sort(idx))
    assert [v.size for v in val] == [20, 10, 1]
    again_train, again_val = split_validation(indices, 0.2, seed=4)
    for a, b in zip(val + train, again_val + again_train, strict=True):
        assert np.array_equal(a, b)
    # a client's split does not depend on the other clients
    shifted = split_validation([np.array([], dtype=np.int64), *indices[1:]], 0.2, 4)
    assert np.array_equal(shifted[1][1], val[1])
    other_seed = split_validation(indices, 0.2, seed=5)[1]
    assert not np.array_equal(other_seed[0], val[0])
    with pytest.raises(PartitionError, match="val_fraction"):
        split_validation(indices, 1.0, seed=0)


def test_shards_cover_every_sample_once_with_few_classes_per_client():
    labels = np.repeat(np.arange(10), 60)
    parts = shard_parts(labels, num_clients=15, shards_per_client=2, seed=3)
    assert all(len(p) == 2 for p in parts)
    flat = np.concatenate([s for p in parts for s in p])
    assert np.array_equal(np.sort(flat), np.arange(labels.size))
    # 15 * 2 / 10 = 3 shards per class, 20 images each, one class per shard
    assert sorted(s.size for p in parts for s in p) == [20] * 30
    for p in parts:
        assert all(np.unique(labels[s]).size == 1 for s in p)
    again = shard_parts(labels, 15, 2, seed=3)
    assert all(
        np.array_equal(a, b)
        for pa, pb in zip(parts, again, strict=True)
        for a, b in zip(pa, pb, strict=True)
    )
    with pytest.raises(PartitionError, match="shards"):
        shard_parts(labels[:20], 15, 2, seed=0)
    with pytest.raises(PartitionError, match="cannot cover 10 classes"):
        shard_parts(labels, 2, 2, seed=0)


def test_shard_classes_follow_lg_fedavg_counts():
    rows = shard_classes(15, 2, 10, seed=0)
    assert rows.shape == (15, 2)
    assert np.bincount(rows.ravel(), minlength=10).tolist() == [3] * 10
    uneven = shard_classes(7, 2, 10, seed=1)  # 14 shards: four classes get two
    assert (
        sorted(np.bincount(uneven.ravel(), minlength=10).tolist()) == [1] * 6 + [2] * 4
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    num_classes=st.integers(2, 12),
    num_clients=st.integers(1, 40),
    shards_per_client=st.integers(1, 4),
    pool_fraction=st.floats(0.05, 1.0),
)
def test_shards_hold_few_classes_and_partition_the_pool(
    seed, num_classes, num_clients, shards_per_client, pool_fraction
):
    """At any pool size: <= shards_per_client classes, disjoint, covering."""
    rng = np.random.default_rng(seed)
    per_class = rng.integers(1, 80, size=num_classes)
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    labels = labels[: max(1, round(pool_fraction * labels.size))]
    shards = num_clients * shards_per_client
    classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=classes)
    if shards < classes:
        with pytest.raises(PartitionError, match="cannot cover"):
            shard_parts(labels, num_clients, shards_per_client, seed, classes)
        return
    slots = np.bincount(
        shard_classes(num_clients, shards_per_client, classes, seed).ravel(),
        minlength=classes,
    )
    if (counts < slots).any():  # a class too small for its shards: a clear error
        with pytest.raises(PartitionError, match="samples for"):
            shard_parts(labels, num_clients, shards_per_client, seed, classes)
        return
    parts = shard_parts(labels, num_clients, shards_per_client, seed, classes)
    flat = np.concatenate([s for p in parts for s in p])
    assert np.array_equal(np.sort(flat), np.arange(labels.size))  # disjoint, cover
    for p in parts:
        assert len(p) == shards_per_client and all(s.size >= 1 for s in p)
        assert np.unique(labels[np.concatenate(p)]).size <= shards_per_client
        assert all(np.unique(labels[s]).size == 1 for s in p)


def test_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    sizes = [50, 40, 30]
    points = np.concatenate(
        [c + rng.normal(size=(n, 2)) for c, n in zip(centres, sizes, strict=True)]
    )
    truth = np.repeat([0, 1, 2], sizes)
    found = kmeans(points, 3, seed=1)
    # numbered by decreasing size, so the ids match the blobs exactly
    assert np.array_equal(found, truth)


def test_distributions_go_to_equal_groups_of_clients():
    clusters = np.repeat([0, 1], [30, 60])
    labels = np.arange(90) % 4
    parts = distribution_parts(clusters, 2, 6, labels, seed=0)
    owned = [np.concatenate(p) for p in parts]
    assert [o.size for o in owned] == [10, 10, 10, 20, 20, 20]
    for j, o in enumerate(owned):
        assert (clusters[o] == j // 3).all()
    assert np.array_equal(np.sort(np.concatenate(owned)), np.arange(90))
    with pytest.raises(PartitionError, match="must divide"):
        distribution_parts(clusters, 4, 6, labels, seed=0)


def test_pixel_pca_features_separate_bright_from_dark_images():
    x = torch.zeros(40, 3, 32, 32, dtype=torch.uint8)
    x[20:] = 200
    x = x + torch.randint(
        0, 20, x.shape, generator=torch.Generator().manual_seed(0)
    ).to(torch.uint8)
    f = pixel_pca_features(x, 4, seed=0)
    assert f.shape == (40, 4)
    assert np.array_equal(
        kmeans(f, 2, seed=0), np.repeat([0, 1], 20)
    ) or np.array_equal(kmeans(f, 2, seed=0), np.repeat([1, 0], 20))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar")
    write_cifar10(folder, per_batch=60, test=20)
    return folder


def fomo_groups(dataset: dict, partition: dict) -> tuple[FedFomoDataset, FomoPartition]:
    """The typed ``dataset.*`` and ``partition.*`` settings of two plain groups.

    Keys a test leaves out (the batch transform's, ``pool_fraction``, the
    embedding network's, ...) get the values of ``conf/fedfomo.yaml``.
    """
    transform = {"image_size": 32, "crop_padding": 0, "flip": False}
    defaults = {
        "kind": "pathological",
        "shards_per_client": 2,
        "num_distributions": 5,
        "features": "pca",
        "embedding_path": None,
        "embedding": {
            "epochs": 3,
            "batch_size": 128,
            "lr": 0.05,
            "width": 512,
            "cache_dir": ".cache/pfl",
        },
        "pca_dim": 64,
        "val_fraction": 0.2,
        "pool_fraction": 1.0,
    }
    return (
        parse(FedFomoDataset, {**transform, **dataset}, "dataset."),
        parse(FomoPartition, {**defaults, **partition}, "partition."),
    )


def fomo_settings(root, **partition) -> tuple[FedFomoDataset, FomoPartition]:
    dataset = {
        "name": "cifar10",
        "root": str(root),
        "source": "default",
        "path": None,
        "download": False,
        "pool_test": False,
        "test_fraction": 0.2,
    }
    part = {
        "kind": "pathological",
        "shards_per_client": 2,
        "num_distributions": 2,
        "features": "pca",
        "embedding_path": None,
        "pca_dim": 8,
        "val_fraction": 0.2,
    }
    part.update(partition)
    return fomo_groups(dataset, part)


@pytest.mark.parametrize(
    "partition",
    [
        {"kind": "pathological"},
        {"kind": "latent", "features": "pca"},
        {"kind": "latent", "features": "labels", "num_distributions": 10},
    ],
)
def test_every_client_gets_disjoint_train_val_test(root, partition):
    data = build_fomo_data(*fomo_settings(root, **partition), num_clients=10, seed=0)
    everything = np.concatenate(data.train + data.val + data.test)
    assert np.unique(everything).size == everything.size  # disjoint across all
    assert everything.size == 300  # the whole pool, official test split left out
    for tr, va in zip(data.train, data.val, strict=True):
        assert va.size == round(0.2 * (tr.size + va.size))
    again = build_fomo_data(*fomo_settings(root, **partition), num_clients=10, seed=0)
    for a, b in zip(data.val + data.test, again.val + again.test, strict=True):
        assert np.array_equal(a, b)
    if partition.get("features") == "labels":  # the class-label case
        for j in range(10):
            owned = np.concatenate([data.train[j], data.val[j], data.test[j]])
            assert np.unique(data.y.numpy()[owned]).size == 1


def test_embedding_file_defines_the_distributions(root, tmp_path):
    labels = build_fomo_data(
        *fomo_settings(root, kind="latent"), num_clients=2, seed=0
    ).y.numpy()
    blob = (labels % 2).astype(np.float32)[:, None] * 100.0
    path = tmp_path / "emb.npy"
    np.save(path, np.concatenate([blob, np.zeros_like(blob)], axis=1))
    data = build_fomo_data(
        *fomo_settings(
            root, kind="latent", features="embedding", embedding_path=str(path)
        ),
        num_clients=4,
        seed=0,
    )
    parity = [
        set((labels[np.concatenate([a, b, c])] % 2).tolist())
        for a, b, c in zip(data.train, data.val, data.test, strict=True)
    ]
    assert parity[0] == parity[1] and parity[2] == parity[3]
    assert parity[0] != parity[2] and all(len(p) == 1 for p in parity)
    np.save(path, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="expected shape"):
        build_fomo_data(
            *fomo_settings(
                root, kind="latent", features="embedding", embedding_path=str(path)
            ),
            num_clients=4,
            seed=1,
        )


def test_labels_case_needs_one_distribution_per_class(root):
    with pytest.raises(PartitionError, match="num_distributions must be 10"):
        build_fomo_data(
            *fomo_settings(root, kind="latent", features="labels", num_distributions=5),
            num_clients=10,
            seed=0,
        )


def test_official_test_split_shares_the_test_set_by_the_same_shards(root):
    dataset, partition = fomo_settings(root)
    dataset = replace(dataset, test_split="official")
    data = build_fomo_data(dataset, partition, num_clients=5, seed=0)
    n_train = 300  # fake CIFAR-10: 5 batches x 60 training images, 20 test images
    labels = data.y.numpy()
    test_pool = np.concatenate(data.test)
    assert np.array_equal(np.sort(test_pool), np.arange(n_train, n_train + 20))
    owned = np.concatenate(data.train + data.val)
    assert np.array_equal(np.sort(owned), np.arange(n_train))  # train+val: all of it
    for tr, va, te in zip(data.train, data.val, data.test, strict=True):
        assert va.size == round(0.2 * (tr.size + va.size))
        assert set(labels[te]) <= set(labels[tr]) | set(labels[va])
        assert np.unique(labels[np.concatenate([tr, va])]).size <= 2
    latent = build_fomo_data(
        dataset, replace(partition, kind="latent"), num_clients=4, seed=0
    )
    assert np.array_equal(
        np.sort(np.concatenate(latent.test)), np.arange(n_train, n_train + 20)
    )
    no_test = replace(dataset, name="digits", source="default")
    with pytest.raises(PartitionError, match="has no test split"):
        build_fomo_data(no_test, partition, num_clients=5, seed=0)
