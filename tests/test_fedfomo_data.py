"""FedFomo's partitions: shards, latent distributions, and the fixed 80/20 split."""

import numpy as np
import pytest
import torch

from fedfomo.dataset import build_fomo_data
from pflcore.latent import distribution_parts, kmeans, pixel_pca_features
from pflcore.partition import PartitionError
from pflcore.splits import shard_parts, split_validation
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
    for p in parts:  # 600 / 30 = 20 per shard: one class each
        assert np.unique(labels[np.concatenate(p)]).size <= 2
    again = shard_parts(labels, 15, 2, seed=3)
    assert all(
        np.array_equal(a, b)
        for pa, pb in zip(parts, again, strict=True)
        for a, b in zip(pa, pb, strict=True)
    )
    with pytest.raises(PartitionError, match="shards"):
        shard_parts(labels[:20], 15, 2, seed=0)


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


def settings(root, **partition):
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
    return dataset, part


@pytest.mark.parametrize(
    "partition",
    [
        {"kind": "pathological"},
        {"kind": "latent", "features": "pca"},
        {"kind": "latent", "features": "labels", "num_distributions": 10},
    ],
)
def test_every_client_gets_disjoint_train_val_test(root, partition):
    data = build_fomo_data(*settings(root, **partition), num_clients=10, seed=0)
    everything = np.concatenate(data.train + data.val + data.test)
    assert np.unique(everything).size == everything.size  # disjoint across all
    assert everything.size == 300  # the whole pool, official test split left out
    for tr, va in zip(data.train, data.val, strict=True):
        assert va.size == round(0.2 * (tr.size + va.size))
    again = build_fomo_data(*settings(root, **partition), num_clients=10, seed=0)
    for a, b in zip(data.val + data.test, again.val + again.test, strict=True):
        assert np.array_equal(a, b)
    if partition.get("features") == "labels":  # the class-label case
        for j in range(10):
            owned = np.concatenate([data.train[j], data.val[j], data.test[j]])
            assert np.unique(data.y.numpy()[owned]).size == 1


def test_embedding_file_defines_the_distributions(root, tmp_path):
    labels = build_fomo_data(*settings(root), num_clients=2, seed=0).y.numpy()
    blob = (labels % 2).astype(np.float32)[:, None] * 100.0
    path = tmp_path / "emb.npy"
    np.save(path, np.concatenate([blob, np.zeros_like(blob)], axis=1))
    data = build_fomo_data(
        *settings(root, kind="latent", features="embedding", embedding_path=str(path)),
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
            *settings(
                root, kind="latent", features="embedding", embedding_path=str(path)
            ),
            num_clients=4,
            seed=1,
        )


def test_labels_case_needs_one_distribution_per_class(root):
    with pytest.raises(PartitionError, match="num_distributions must be 10"):
        build_fomo_data(
            *settings(root, kind="latent", features="labels", num_distributions=5),
            num_clients=10,
            seed=0,
        )
