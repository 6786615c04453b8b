"""Every data file the suite reads, when empty, truncated, of the wrong type or
corrupt, gives one line naming the file (pflcore.data.images.reading)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedfomo.latent import load_embedding
from fedper.flickr import read_ratings_csv
from perfedavg.emnist import load_emnist
from pflcore.data.images import DataFormatError, load_dataset
from tests.fake_emnist import write_emnist_idx, write_emnist_npz
from tests.fakedata import write_cifar10, write_cifar100, write_mnist
from tests.mainrun import run_module


def _uncached(load: Callable, *args) -> Callable[[], object]:
    # the loaders cache per process; bypass the cache so each damage is read
    return lambda: getattr(load, "__wrapped__", load)(*args)


def cifar10(root: Path) -> tuple[Path, Callable]:
    write_cifar10(root, per_batch=20, test=10)
    return root / "cifar-10-batches-py" / "data_batch_2", _uncached(
        load_dataset, "cifar10", str(root)
    )


def cifar100(root: Path) -> tuple[Path, Callable]:
    write_cifar100(root, train=100, test=100)
    return root / "cifar-100-python" / "train", _uncached(
        load_dataset, "cifar100", str(root)
    )


def mnist_gz(root: Path) -> tuple[Path, Callable]:
    write_mnist(root, train=30, test=10)
    return root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz", _uncached(
        load_dataset, "mnist", str(root)
    )


def mnist_raw(root: Path) -> tuple[Path, Callable]:
    write_mnist(root, train=30, test=10, gz=False)
    return root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", _uncached(
        load_dataset, "mnist", str(root)
    )


def emnist_idx(root: Path) -> tuple[Path, Callable]:
    write_emnist_idx(root, train=52, test=26)
    path = root / "EMNIST" / "raw" / "emnist-letters-train-images-idx3-ubyte.gz"
    return path, _uncached(load_emnist, str(root))


def emnist_npz(root: Path) -> tuple[Path, Callable]:
    path = root / "letters.npz"
    write_emnist_npz(path, train=52, test=26)
    return path, _uncached(load_emnist, str(root), "letters", "npz", str(path))


def images_npz(root: Path) -> tuple[Path, Callable]:
    path = root / "own.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(20) % 2,
    )
    return path, _uncached(load_dataset, "npz", str(root), "npz", str(path))


def ratings_csv(root: Path) -> tuple[Path, Callable]:
    path = root / "ratings.csv"
    path.write_text("worker, imagePair, score\nw1, a.jpg, 3\nw2, b.jpg, 4\n")
    return path, lambda: read_ratings_csv(path)


def embedding_npy(root: Path) -> tuple[Path, Callable]:
    path = root / "emb.npy"
    np.save(path, np.ones((20, 4), dtype=np.float32))
    return path, lambda: load_embedding(path, 20)


FORMATS = [
    cifar10,
    cifar100,
    mnist_gz,
    mnist_raw,
    emnist_idx,
    emnist_npz,
    images_npz,
    ratings_csv,
    embedding_npy,
]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "wrong type":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # an image, not data
    else:  # corrupt: the same length of noise
        path.write_bytes(np.random.default_rng(1).bytes(len(data)))


@pytest.mark.parametrize("how", ["empty", "truncated", "wrong type", "corrupt"])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.__name__)
def test_a_damaged_file_is_one_line_naming_it(tmp_path, fmt, how):
    path, load = fmt(tmp_path)
    load()  # intact: reads
    damage(path, how)
    with pytest.raises(DataFormatError) as info:
        load()
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message


@pytest.mark.slow
def test_main_stops_with_one_line_on_a_damaged_file(tmp_path):
    write_mnist(tmp_path, train=60, test=20)
    path = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    damage(path, "truncated")
    result = run_module(
        "perfedavg.main",
        f"dataset.root={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "num_clients=4",
        "clients_per_round=2",
        "partition.a=2",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: {path} is not a readable idx file")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_unwritable_run_folder_is_reported_before_any_work(tmp_path):
    from pflcore.run.output_check import unwritable_reason

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert unwritable_reason(tmp_path / "new" / "run") is None
    assert unwritable_reason(blocker / "run") == f"{blocker} is a file, not a folder"
    result = run_module(
        "fedfomo.main",
        f"hydra.run.dir={blocker / 'run'}",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: hydra.run.dir={blocker / 'run'} cannot be written: "
        f"{blocker} is a file, not a folder"
    )


@pytest.mark.slow
def test_a_sweep_job_folder_that_cannot_be_made_is_one_line_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "fedavg_seed1").write_text("a file where job #2's folder goes")
    result = run_module(
        "fedper.main",
        "--multirun",
        "experiment=fedper/quick",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${algorithm}_seed${seed}/run",
        "algorithm=fedavg",
        "seed=0,1",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: hydra.sweep.subdir=fedavg_seed1/run (job #1: "
        "algorithm=fedavg experiment=fedper/quick seed=1) cannot be written: "
        f"{sweep / 'fedavg_seed1'} is a file, not a folder"
    )
    assert sorted(p.name for p in sweep.iterdir()) == ["fedavg_seed1"]  # no job ran


def checkpoint_file(root: Path) -> tuple[Path, Callable]:
    from pflcore.run.checkpoint import read_checkpoint, write_checkpoint

    path = write_checkpoint(root, {"round": 3, "config": {}})
    return path, lambda: read_checkpoint(root)


@pytest.mark.parametrize("how", ["empty", "truncated", "wrong type", "corrupt"])
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, how):
    path, load = checkpoint_file(tmp_path)
    assert load()["round"] == 3
    damage(path, how)
    with pytest.raises(DataFormatError) as info:
        load()
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    import pickle

    from pflcore.run.checkpoint import read_checkpoint, write_checkpoint

    write_checkpoint(tmp_path, {"round": 1, "config": {}})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies half-way through the dump

    monkeypatch.setattr(pickle, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, {"round": 2, "config": {}})
    monkeypatch.undo()
    assert read_checkpoint(tmp_path)["round"] == 1


@pytest.mark.parametrize("how", ["empty", "truncated", "wrong type", "corrupt"])
def test_a_damaged_flickr_image_is_one_line_naming_it(tmp_path, how):
    from PIL import Image

    from fedper.flickr import decode_images

    path = tmp_path / "farm1_1_1.jpg"
    Image.new("RGB", (12, 10), (200, 30, 30)).save(path)
    assert decode_images([path], 8).shape == (1, 3, 8, 8)
    damage(path, how)
    with pytest.raises(DataFormatError) as info:
        decode_images([path], 8)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_checkpoint_of_another_suite_version_is_refused_in_one_line(tmp_path):
    import pickle

    from pflcore.run.checkpoint import CHECKPOINT_FILE, FORMAT, read_checkpoint

    path = tmp_path / CHECKPOINT_FILE
    old = "pfl-suite checkpoint 1"
    assert old != FORMAT
    path.write_bytes(pickle.dumps({"format": old, "round": 4, "config": {}}))
    with pytest.raises(DataFormatError) as info:
        read_checkpoint(tmp_path)
    message = str(info.value)
    assert "another version of this suite" in message and old in message
    assert str(path) in message and "\n" not in message
