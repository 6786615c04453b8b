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


def test_fedfomo_and_ditto_take_the_shared_partition_of_the_training_set():
    overrides = ["num_clients=10", *SHARED]
    fomo = prepared_data("fedfomo", ["experiment=fedfomo/quick", *overrides])
    ditto = prepared_data("ditto", ["experiment=ditto/quick", *overrides])
    settings = parse(
        SharedPartition, {"partition": "classes", "samples_per_client": 120}
    )
    expected = shared_client_data(fomo.data.data, 10, settings, seed=0)
    assert partition_digest(fomo.data) == partition_digest(expected)
    assert partition_digest(ditto.data) == partition_digest(expected)
    assert torch.equal(fomo.data.pools["test"][0], fomo.data.data.x_train)


@pytest.mark.parametrize("package", ["fedper", "pfedhn", "perfedavg"])
def test_a_package_without_the_shared_partition_refuses_it_in_one_line(package):
    config = to_plain(compose(package, [f"experiment={package}/quick", *SHARED]))
    with pytest.raises(ConfigError, match=f"not available in {package} yet"):
        package_of(package).resolve(config)
