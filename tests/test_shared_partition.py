"""The shared protocol's partition: the training set only, one for every package."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pflcore.config import ConfigError, to_plain
from pflcore.config.settings import parse
from pflcore.config.shared import SharedPartition
from pflcore.data.images import ImageData
from pflcore.data.partition import PartitionError
from pflcore.data.shared_partition import partition_digest, shared_client_data
from pflcore.run.packages import compose, package_of, prepared_data

SPLITS = ("train", "val", "test")


def image_data(per_class: int = 100, classes: int = 10) -> ImageData:
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.arange(y.numel(), dtype=torch.int64).remainder(256).to(torch.uint8)
    x = x.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    # an official test split the protocol must not touch
    return ImageData("toy", x, y, x[:5].clone(), y[:5].clone(), classes)


def protocol(**kw) -> SharedPartition:
    base = {"partition": "classes", "samples_per_client": 40}
    return parse(SharedPartition, {**base, **kw}, "protocol.")


@pytest.mark.parametrize("kind", ["classes", "dirichlet"])
def test_every_client_holds_its_share_of_the_training_set_cut_three_ways(kind):
    data = image_data()
    shared = shared_client_data(data, 12, protocol(partition=kind), seed=3)
    seen = []
    for j in range(12):
        pieces = [shared.indices[s][j] for s in SPLITS]
        assert sum(p.size for p in pieces) == 40
        assert all(p.size > 0 for p in pieces)
        seen.extend(np.concatenate(pieces).tolist())
        x, _ = shared.split_of(j, "test")
        assert torch.equal(x, data.x_train[torch.from_numpy(shared.indices["test"][j])])
    assert len(seen) == len(set(seen))  # no image in two clients or two splits
    assert max(seen) < data.x_train.shape[0]


def test_the_classes_partition_gives_each_split_the_clients_k_classes():
    shared = shared_client_data(image_data(), 10, protocol(classes_per_client=2), 0)
    labels = shared.pools["train"][1].numpy()
    for j in range(10):
        held = [set(labels[shared.indices[s][j]].tolist()) for s in SPLITS]
        assert len(held[0]) == 2 and held[0] == held[1] == held[2]


def test_same_seed_same_partition_and_digest_other_seed_other():
    data = image_data()
    a = shared_client_data(data, 8, protocol(partition="dirichlet"), seed=1)
    b = shared_client_data(data, 8, protocol(partition="dirichlet"), seed=1)
    c = shared_client_data(data, 8, protocol(partition="dirichlet"), seed=2)
    assert partition_digest(a) == partition_digest(b)
    assert partition_digest(a) != partition_digest(c)


def test_the_digest_changes_with_any_index():
    shared = shared_client_data(image_data(), 4, protocol(), seed=0)
    moved = [idx.copy() for idx in shared.indices["val"]]
    moved[3][0] += 1
    other = replace(shared, indices={**shared.indices, "val": moved})
    assert partition_digest(other) != partition_digest(shared)
    swapped = {
        **shared.indices,
        "val": shared.indices["test"],
        "test": shared.indices["val"],
    }
    assert partition_digest(replace(shared, indices=swapped)) != partition_digest(
        shared
    )


def test_a_partition_the_data_cannot_meet_is_one_line():
    with pytest.raises(PartitionError, match="exceed the 1000 images"):
        shared_client_data(image_data(), 30, protocol(samples_per_client=40), seed=0)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [("partition", "shards", "protocol.partition must"),
     ("val_fraction", 0.5, "protocol.val_fraction \\+ protocol.test_fraction"),
     ("alpha", 0, "protocol.alpha must"),
     ("samples_per_client", 1, "protocol.samples_per_client must")],
)  # fmt: skip
def test_bad_protocol_settings_are_named(key, value, words):
    with pytest.raises(ConfigError, match=words):
        protocol(**{key: value, "test_fraction": 0.5})


SHARED = ["protocol.partition=classes", "protocol.samples_per_client=120"]


PACKAGES = ("fedper", "pfedhn", "perfedavg", "fedfomo", "ditto")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_takes_the_same_shared_partition_of_the_training_set(package):
    overrides = [f"experiment={package}/quick", "num_clients=10", "seed=4", *SHARED]
    prepared = prepared_data(package, overrides)
    settings = parse(
        SharedPartition, {"partition": "classes", "samples_per_client": 120}
    )
    expected = shared_client_data(prepared.data.data, 10, settings, seed=4)
    assert partition_digest(prepared.data) == partition_digest(expected)
    assert prepared.data.data.name == "digits"  # every quick preset: the same images
    for name in SPLITS:
        x, _ = prepared.data.pools[name]
        assert x.shape[0] == prepared.data.data.x_train.shape[0]  # no official test


def test_pfedhn_records_each_shared_clients_classes_and_shares():
    prepared = prepared_data("pfedhn", ["experiment=pfedhn/quick", *SHARED])
    counts = prepared.data.class_counts(("train",))[:, 0]
    assert prepared.summary["client_classes"] == [
        np.flatnonzero(row).tolist() for row in counts
    ]
    assert all(len(c) == 2 for c in prepared.summary["client_classes"])
    shares = prepared.data.assignment.shares
    totals = counts.sum(axis=0)
    for c in range(counts.shape[1]):  # the shares of a held class add up to one
        held = [
            shares[j][prepared.data.assignment.classes[j].index(c)]
            for j in range(counts.shape[0])
            if c in prepared.data.assignment.classes[j]
        ]
        assert totals[c] == 0 or abs(sum(held) - 1) < 1e-9


class NotYet(type(package_of("fedper"))):  # type: ignore[misc]
    """A package that has not wired the shared partition."""

    takes_shared_partition = False


def test_a_package_without_the_shared_partition_refuses_it_in_one_line():
    config = to_plain(compose("fedper", ["experiment=fedper/quick", *SHARED]))
    with pytest.raises(ConfigError, match="not available in fedper yet"):
        NotYet().resolve(config)
