"""FLICKR-AES: reading the published layout, FedPer's choice of raters, their splits.

The files are generated in the published layout (``tests/fakeflickr.py``);
every expectation is computed from what was written, not from the loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import fedper.dataset as fedper_dataset
from fedper.dataset import build_federated_data, partition_raters
from fedper.flickr import read_flickr_ratings
from fedper.main import PACKAGE
from fedper.settings import FedPerDataset, parse_settings
from pflcore.config import ConfigError, to_plain
from pflcore.data.images import DatasetNotFoundError
from pflcore.data.partition import PartitionError, select_users
from tests.fakeflickr import LABELS_FILE, image_name, index_of, write_flickr
from tests.mainrun import REPO, output_tail, run_module

CONF = str(REPO / "conf")

# Rating counts around the paper's bounds: more than 60 and fewer than 290.
COUNTS = {
    "W030": 30,
    "W060": 60,
    "W061": 61,
    "W064": 64,
    "W070": 70,
    "W150": 150,
    "W289": 289,
    "W290": 290,
    "W300": 300,
}
ELIGIBLE = ["W061", "W064", "W070", "W150", "W289"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    read_flickr_ratings.cache_clear()
    yield
    read_flickr_ratings.cache_clear()


def flickr_dataset(root: Path, *overrides: str) -> FedPerDataset:
    """The typed ``dataset`` settings of :func:`flickr_config`."""
    return parse_settings(flickr_config(root, *overrides)).dataset


def flickr_config(root: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "fedper",
            overrides=["dataset=flickr", f"dataset.root={root}", *overrides],
        )
    return to_plain(cfg)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("flickr_root")
    return root, write_flickr(root, COUNTS, num_images=300, seed=5)


def test_csv_with_published_header_spacing_is_read_exactly(written):
    _, fake = written
    assert (
        (fake.folder / LABELS_FILE).read_text().startswith("worker, imagePair, score\n")
    )
    ratings = read_flickr_ratings(str(fake.folder), LABELS_FILE)
    assert ratings.users.tolist() == fake.workers
    assert ratings.items.tolist() == fake.images
    assert ratings.scores.tolist() == fake.scores


def test_spaces_after_commas_in_rows_are_stripped_too(tmp_path):
    fake = write_flickr(tmp_path, {"A": 3, "B": 2}, pad_values=True)
    assert ", farm1_" in (fake.folder / LABELS_FILE).read_text()
    ratings = read_flickr_ratings(str(fake.folder), LABELS_FILE)
    assert ratings.users.tolist() == fake.workers
    assert ratings.items.tolist() == fake.images


def test_only_workers_strictly_between_60_and_290_ratings_are_drawn(written):
    _, fake = written
    users = np.asarray(fake.workers)
    everyone = select_users(users, 5, seed=0, more_than=60, fewer_than=290)
    assert everyone.tolist() == ELIGIBLE
    drawn: set[str] = set()
    for seed in range(40):
        chosen = select_users(users, 3, seed, more_than=60, fewer_than=290)
        assert len(set(chosen)) == 3 and set(chosen) <= set(ELIGIBLE)
        drawn |= set(chosen.tolist())
    assert drawn == set(ELIGIBLE)  # every eligible worker can be drawn
    again = select_users(users, 3, 7, more_than=60, fewer_than=290)
    assert (
        select_users(users, 3, 7, more_than=60, fewer_than=290).tolist()
        == again.tolist()
    )
    with pytest.raises(PartitionError, match="only 5 of 9 users"):
        select_users(users, 6, 0, more_than=60, fewer_than=290)


def test_min_per_score_keeps_workers_with_every_score_often_enough():
    users = np.array(["a"] * 10 + ["b"] * 10)
    labels = np.array([0, 1, 2, 3, 4] * 2 + [0] * 6 + [1, 2, 3, 4])
    assert select_users(users, 2, 0, labels=labels, min_per_label=1).tolist() == [
        "a",
        "b",
    ]
    assert select_users(users, 1, 0, labels=labels, min_per_label=2).tolist() == ["a"]


def test_each_worker_is_split_80_20_disjoint_and_the_same_every_time(written):
    root, _ = written
    dataset = flickr_dataset(root, "dataset.image_size=16")
    fed = build_federated_data(dataset, 3, seed=1)
    again = build_federated_data(dataset, 3, seed=1)
    assert fed.client_names is not None and len(fed.client_names) == 3
    assert set(fed.client_names) <= set(ELIGIBLE)
    assert fed.client_names == again.client_names
    total = 0
    for j, worker in enumerate(fed.client_names):
        train, test = fed.indices["train"][j], fed.indices["test"][j]
        n = COUNTS[worker]
        assert not set(train) & set(test)
        assert train.size + test.size == n
        assert test.size == round(0.2 * n)
        np.testing.assert_array_equal(train, again.indices["train"][j])
        np.testing.assert_array_equal(test, again.indices["test"][j])
        total += n
    assert fed.pools["train"][0].shape == (total, 3, 16, 16)
    assert fed.pools["train"][1].shape == (total,)
    other = build_federated_data(dataset, 3, seed=2)
    assert other.client_names != fed.client_names or any(
        not np.array_equal(a, b)
        for a, b in zip(other.indices["test"], fed.indices["test"], strict=True)
    )


def test_labels_are_the_workers_own_scores_minus_one(written):
    root, fake = written
    dataset = flickr_dataset(root, "dataset.image_size=8")
    fed = build_federated_data(dataset, 4, seed=3)
    assert fed.data.num_classes == 5 and fed.data.channels == 3
    for j, worker in enumerate(fed.client_names):
        own = fake.ratings_of(worker)
        (x_train, y_train), (x_test, y_test) = (
            fed.split_of(j, "train"),
            fed.split_of(j, "test"),
        )
        seen = []
        for x, y in ((x_train, y_train), (x_test, y_test)):
            for image, label in zip(x.numpy(), y.tolist(), strict=True):
                name = image_name(index_of(image[:, 4, 4]))
                assert label == own[name] - 1
                seen.append(name)
        assert sorted(seen) == sorted(own)  # every rating once, nothing else
    counts = fed.class_counts()
    assert counts.shape == (4, 2, 5)


def test_only_the_drawn_workers_images_are_decoded_once_each(written, monkeypatch):
    root, fake = written
    decoded: list[str] = []
    original = fedper_dataset.decode_images

    def spy(paths, size):
        decoded.extend(p.name for p in paths)
        return original(paths, size)

    monkeypatch.setattr(fedper_dataset, "decode_images", spy)
    dataset = flickr_dataset(root, "dataset.image_size=8")
    fed = build_federated_data(dataset, 2, seed=0)
    wanted = set().union(*(fake.ratings_of(w) for w in fed.client_names))
    assert len(decoded) == len(set(decoded)) == len(wanted)
    assert set(decoded) == wanted


def test_images_are_found_wherever_the_zip_put_them(tmp_path):
    # No 40K/ folder: the images sit one level deeper under another name.
    fake = write_flickr(
        tmp_path, {"A": 62, "B": 63}, image_folder="FLICKR-AES-001/images"
    )
    assert not (fake.folder / "40K").exists()
    dataset = flickr_dataset(tmp_path, "dataset.image_size=8")
    fed = build_federated_data(dataset, 2, seed=0)
    assert fed.pools["train"][0].shape[0] == 62 + 63


def test_missing_files_name_the_path_and_what_to_do(tmp_path, written):
    dataset = flickr_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="nowhere/flickr") as info:
        build_federated_data(dataset, 2, seed=0)
    assert "FLICKR-AES-001.zip" in str(info.value)

    fake = write_flickr(tmp_path, {"A": 62, "B": 63})
    (fake.folder / LABELS_FILE).unlink()
    with pytest.raises(DatasetNotFoundError, match=LABELS_FILE):
        build_federated_data(flickr_dataset(tmp_path), 2, seed=0)

    fake = write_flickr(tmp_path, {"A": 62, "B": 63})
    victim = fake.images[0]
    (fake.folder / "40K" / victim).unlink()
    with pytest.raises(DatasetNotFoundError, match=victim):
        build_federated_data(flickr_dataset(tmp_path), 2, seed=0)


def test_partition_raters_rejects_too_many_clients(written):
    _, fake = written
    with pytest.raises(PartitionError, match="30 clients requested but only 5"):
        partition_raters(
            np.asarray(fake.workers),
            np.asarray(fake.scores),
            30,
            0,
            min_ratings=60,
            max_ratings=290,
            test_fraction=0.2,
        )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["dataset.min_ratings=300"], "min_ratings < max_ratings"),
        (["dataset.test_fraction=1.5"], "test_fraction must lie in (0, 1)"),
        (["dataset.min_per_score=-1"], "min_per_score must be an integer >= 0"),
    ],
)
def test_bad_flickr_settings_are_rejected(tmp_path, overrides, expected):
    config = flickr_config(tmp_path, "client_resources.num_gpus=0", *overrides)
    with pytest.raises(ConfigError) as info:
        PACKAGE.check(config)
    assert expected in str(info.value)


def test_dataset_name_flickr_on_another_group_is_explained(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        config = to_plain(compose("fedper", overrides=["dataset.name=flickr"]))
    with pytest.raises(ConfigError, match="dataset=flickr"):
        PACKAGE.check(config)


@pytest.mark.slow
def test_main_runs_two_rounds_on_flickr_end_to_end(tmp_path):
    """One real Ray simulation: FLICKR raters, head fine-tuning, a linear base."""
    root = tmp_path / "data"
    counts = {"A01": 61, "A02": 64, "A03": 66, "A04": 70, "A05": 40}
    fake = write_flickr(root, counts, seed=1)
    run_dir = tmp_path / "run"
    overrides = [
        "dataset=flickr",
        f"dataset.root={root}",
        "dataset.image_size=32",
        "num_clients=3",
        "num_rounds=2",
        "local_epochs=1",
        "batch_size=4",
        "head_finetune_epochs=1",
        "model.linear_base=true",
        f"hydra.run.dir={run_dir}",
    ]
    result = run_module("fedper.main", *overrides, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, output_tail(result)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    names = summary["client_names"]
    assert len(names) == 3 and set(names) <= {"A01", "A02", "A03", "A04"}
    assert summary["linear_base"]["form"] == "conv"
    assert summary["linear_base"]["out_shape"] == [1024, 1, 1]
    rounds = pd.read_csv(run_dir / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2]
    clients = pd.read_csv(run_dir / "clients.csv")
    last = clients[clients["round"] == 2].sort_values("partition_id")
    expected_test = [round(0.2 * counts[w]) for w in names]
    assert last["num_samples"].tolist() == expected_test
    partition = pd.read_csv(run_dir / "partition.csv")
    assert [c for c in partition.columns if c.startswith("c")] == [
        f"c{k}" for k in range(5)
    ]
    for j, worker in enumerate(names):
        own = fake.ratings_of(worker)
        rows = partition[partition["partition_id"] == j]
        per_class = rows[[f"c{k}" for k in range(5)]].sum(axis=0).tolist()
        assert per_class == [
            sum(1 for s in own.values() if s == k + 1) for k in range(5)
        ]
