"""FedFomo's trained embedding: follows labels, cached once, damage reported."""

import numpy as np
import pytest
import torch

import fedfomo.embedding
from fedfomo.dataset import build_fomo_data, distribution_labels
from fedfomo.embedding import (
    cached_embedding,
    label_report,
    reduce_and_cluster,
)
from fedfomo.settings import Embedding
from pflcore.data.images import DataFormatError
from tests.fakedata import write_cifar10
from tests.test_fedfomo_data import fomo_groups


def spec(tmp_path, epochs: int = 4) -> Embedding:
    return Embedding(
        epochs=epochs, batch_size=32, lr=0.05, width=32, cache_dir=str(tmp_path)
    )


def test_label_report_by_hand():
    clusters = np.array([0, 0, 0, 0, 1, 1])
    labels = np.array([0, 0, 0, 0, 0, 1])
    histograms, distances = label_report(clusters, labels, num_classes=2)
    assert histograms == [[4, 0], [1, 1]]
    # single class: 1/2 (|1 - 1/2| + |0 - 1/2|) = 0.5; uniform: 0
    assert distances == [0.5, 0.0]


def test_reduce_and_cluster_recovers_blobs_numbered_by_size():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=20, size=(3, 16))
    sizes = [50, 30, 20]
    points = np.concatenate(
        [c + rng.normal(size=(n, 16)) for c, n in zip(centres, sizes, strict=True)]
    )
    found = reduce_and_cluster(points, pca_dim=4, num_clusters=3, seed=0)
    assert np.array_equal(found, np.repeat([0, 1, 2], sizes))


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    x = y.view(-1, 1, 1, 1) * 60 + torch.randint(0, 40, (200, 3, 8, 8), generator=gen)
    return x.to(torch.uint8), y


def test_embedding_is_cached_and_reused_without_training(images, tmp_path, monkeypatch):
    x, y = images
    first = cached_embedding(x, y, x, 4, spec(tmp_path), 0)
    assert first.shape == (200, 32) and first.dtype == np.float32
    assert len(list(tmp_path.glob("embedding-*.npy"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the cache holds the embedding")

    monkeypatch.setattr(fedfomo.embedding, "train_embedding_net", no_training)
    np.testing.assert_array_equal(
        cached_embedding(x, y, x, 4, spec(tmp_path), 0), first
    )
    with pytest.raises(AssertionError, match="trained again"):
        cached_embedding(x, y, x, 4, spec(tmp_path, epochs=5), 0)  # other key
    with pytest.raises(AssertionError, match="trained again"):
        cached_embedding(x, y, x, 4, spec(tmp_path), 1)  # another seed: another key


def test_damaged_cache_is_one_clear_error(images, tmp_path):
    x, y = images
    cached_embedding(x, y, x, 4, spec(tmp_path), 0)
    (path,) = tmp_path.glob("embedding-*.npy")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(DataFormatError, match=f"cached embedding {path}.*delete it"):
        cached_embedding(x, y, x, 4, spec(tmp_path), 0)
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match="unreadable"):
        cached_embedding(x, y, x, 4, spec(tmp_path), 0)


def test_trained_latent_split_follows_the_labels(tmp_path):
    write_cifar10(tmp_path, per_batch=60, test=20)
    dataset = {
        "name": "cifar10",
        "root": str(tmp_path),
        "source": "default",
        "path": None,
        "download": False,
        "pool_test": False,
        "test_fraction": 0.2,
        "test_split": "official",
    }
    partition = {
        "kind": "latent",
        "num_distributions": 5,
        "features": "trained",
        "embedding_path": None,
        "embedding": {
            "epochs": 6,
            "batch_size": 32,
            "lr": 0.05,
            "width": 64,
            "cache_dir": str(tmp_path / "cache"),
        },
        "pca_dim": 16,
        "val_fraction": 0.2,
    }
    data = build_fomo_data(*fomo_groups(dataset, partition), num_clients=5, seed=0)
    histograms, distances = distribution_labels(data)
    assert sum(map(sum, histograms)) == 320  # every train and test image
    # 10 classes into 5 distributions: content clusters hold few classes each,
    # far from the label-uniform split (TV 0) that near-IID clusters give
    assert np.mean(distances) > 0.4, (histograms, distances)
