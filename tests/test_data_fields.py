"""Every field of a user's data file, refused in one line naming file and field.

Tables of broken variants of a valid file: the ``.npz`` of one's own data
(``x_train``, ``y_train``, ``x_test``, ``y_test``), a SuperNode's partition
file, FedFomo's separate test file and its embedding ``.npy``. Each variant
must raise ``DataFormatError`` with one line that names the file, the field
and what is wrong, before anything starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedfomo.dataset import load_test_file
from fedfomo.latent import load_embedding
from pflcore.data.images import DataFormatError, ImageData, _load_npz
from pflcore.data.partition_files import FORMAT, read_partition

RNG = np.random.default_rng(0)


def images(n: int, *shape: int, dtype=np.uint8) -> np.ndarray:
    return RNG.integers(0, 256, (n, *shape)).astype(dtype)


def valid_npz() -> dict[str, np.ndarray]:
    return {
        "x_train": images(12, 8, 8),
        "y_train": np.arange(12) % 3,
        "x_test": images(6, 8, 8),
        "y_test": np.arange(6) % 3,
    }


def without(key: str) -> Callable[[dict], dict]:
    return lambda a: {k: v for k, v in a.items() if k != key}


def setting(key: str, value) -> Callable[[dict], dict]:
    return lambda a: {**a, key: value}


NPZ_CASES = {
    "x_train floats": (
        setting("x_train", images(12, 8, 8, dtype=np.float32)),
        "x_train",
        "uint8",
    ),
    "x_train int64": (
        setting("x_train", images(12, 8, 8, dtype=np.int64)),
        "x_train",
        "uint8",
    ),
    "x_train flat": (setting("x_train", images(12, 64)), "x_train", "shape"),
    "x_train 5-D": (setting("x_train", images(12, 1, 8, 8, 1)), "x_train", "shape"),
    "x_train 5 channels": (
        setting("x_train", images(12, 8, 8, 5)),
        "x_train",
        "channels",
    ),
    "x_train empty": (setting("x_train", images(0, 8, 8)), "x_train", "no image"),
    "x_train not square": (setting("x_train", images(12, 8, 6)), "x_train", "square"),
    "x_train objects": (
        setting("x_train", np.array([object()] * 12, dtype=object)),
        "x_train",
        "not a readable array",
    ),
    "y_train floats": (setting("y_train", np.arange(12.0) % 3), "y_train", "integer"),
    "y_train bools": (setting("y_train", np.arange(12) % 2 == 0), "y_train", "integer"),
    "y_train 2-D": (
        setting("y_train", np.zeros((12, 2), np.int64)),
        "y_train",
        "shape",
    ),
    "y_train short": (
        setting("y_train", np.arange(11) % 3),
        "y_train",
        "11 labels for 12",
    ),
    "y_train negative": (
        setting("y_train", np.array([-1] + [0, 1, 2] * 3 + [0, 1])),
        "y_train",
        "negative",
    ),
    "y_train gap": (
        setting("y_train", np.array([0, 1, 5] * 4)),
        "y_train",
        "no sample of class 2, 3, 4",
    ),
    "y_train objects": (
        setting("y_train", np.array(["a"] * 12, dtype=object)),
        "y_train",
        "not a readable array",
    ),
    "x_test alone": (without("y_test"), "y_test", "x_test but no y_test"),
    "y_test alone": (without("x_test"), "x_test", "y_test but no x_test"),
    "x_test floats": (
        setting("x_test", images(6, 8, 8, dtype=np.float64)),
        "x_test",
        "uint8",
    ),
    "x_test other size": (setting("x_test", images(6, 9, 9)), "x_test", "same layout"),
    "x_test other channels": (
        setting("x_test", images(6, 8, 8, 3)),
        "x_test",
        "same layout",
    ),
    "y_test short": (setting("y_test", np.arange(5) % 3), "y_test", "5 labels for 6"),
    "y_test unknown class": (
        setting("y_test", np.array([0, 1, 2, 3, 0, 1])),
        "y_test",
        "a class y_train does not have",
    ),
    "y_test floats": (setting("y_test", np.zeros(6)), "y_test", "integer"),
    "x_train missing": (without("x_train"), "x_train", "must contain x_train"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_every_field_of_ones_own_npz_is_checked(tmp_path, case):
    change, field, what = NPZ_CASES[case]
    path = tmp_path / "own.npz"
    np.savez(path, **change(valid_npz()))
    with pytest.raises(DataFormatError) as error:
        _load_npz("npz", path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and field in message and what in message, message


def test_the_valid_npz_loads_with_its_three_classes(tmp_path):
    path = tmp_path / "own.npz"
    np.savez(path, **valid_npz())
    assert _load_npz("npz", path).num_classes == 3


def write_partition_file(path: Path, change: Callable[[dict], dict]) -> None:
    meta = {
        "format": FORMAT,
        "partition_id": 1,
        "num_partitions": 3,
        "dataset": "mnist",
        "num_classes": 4,
        "channels": 1,
        "image_size": 8,
        "splits": ["train", "test"],
    }
    arrays = {
        "meta": meta,
        "x_train": images(5, 1, 8, 8),
        "y_train": np.array([0, 1, 2, 3, 0], dtype=np.int64),
        "x_test": images(2, 1, 8, 8),
        "y_test": np.array([1, 2], dtype=np.int64),
    }
    arrays = change(arrays)
    if isinstance(arrays.get("meta"), dict):
        arrays["meta"] = np.array(json.dumps(arrays["meta"]))
    np.savez(path, **arrays)


def meta_setting(key: str, value) -> Callable[[dict], dict]:
    return lambda a: {**a, "meta": {**a["meta"], key: value}}


PARTITION_CASES = {
    "meta missing": (without("meta"), "meta", "missing"),
    "meta format": (meta_setting("format", "other 1"), "format", "'other 1'"),
    "meta pid string": (
        meta_setting("partition_id", "1"),
        "meta.partition_id",
        "integer",
    ),
    "meta pid range": (meta_setting("partition_id", 3), "meta.partition_id", "0..meta"),
    "meta classes": (meta_setting("num_classes", 0), "meta.num_classes", ">= 1"),
    "meta dataset": (meta_setting("dataset", None), "meta.dataset", "string"),
    "meta splits": (meta_setting("splits", []), "meta.splits", "name the splits"),
    "x_train missing": (without("x_train"), "x_train", "missing"),
    "x_train floats": (
        setting("x_train", images(5, 1, 8, 8, dtype=np.float32)),
        "x_train",
        "uint8",
    ),
    "x_train size": (setting("x_train", images(5, 1, 9, 9)), "x_train", "(n, 1, 8, 8)"),
    "y_train int32": (
        setting("y_train", np.array([0, 1, 2, 3, 0], dtype=np.int32)),
        "y_train",
        "int64",
    ),
    "y_train length": (setting("y_train", np.zeros(4, np.int64)), "y_train", "5 int64"),
    "y_test range": (setting("y_test", np.array([1, 4])), "y_test", "outside the 4"),
    "y_test negative": (setting("y_test", np.array([-1, 0])), "y_test", "outside"),
}


@pytest.mark.parametrize("case", sorted(PARTITION_CASES))
def test_every_field_of_a_partition_file_is_checked(tmp_path, case):
    change, field, what = PARTITION_CASES[case]
    path = tmp_path / "partition-1.npz"
    write_partition_file(path, change)
    with pytest.raises(DataFormatError) as error:
        read_partition(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and field in message and what in message, message


def test_the_valid_partition_file_reads_back(tmp_path):
    path = tmp_path / "partition-1.npz"
    write_partition_file(path, lambda a: a)
    assert read_partition(path).partition_id == 1


def test_fedfomos_test_file_matches_the_training_data(tmp_path):
    import torch

    train = ImageData(
        "npz",
        torch.zeros(4, 3, 8, 8, dtype=torch.uint8),
        torch.zeros(4, dtype=torch.int64),
        None,
        None,
        3,
    )
    cases = {
        "floats": (
            images(4, 8, 8, 3, dtype=np.float32),
            np.arange(4) % 3,
            "x_test",
            "uint8",
        ),
        "size": (images(4, 9, 9, 3), np.arange(4) % 3, "x_test", "(C, H, W)"),
        "labels": (
            images(4, 8, 8, 3),
            np.array([0, 1, 2, 3]),
            "y_test",
            "beyond the 3",
        ),
        "length": (images(4, 8, 8, 3), np.arange(3), "y_test", "3 labels for 4"),
        "label type": (images(4, 8, 8, 3), np.zeros(4), "y_test", "integer"),
    }
    for name, (x, y, field, what) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_test=x, y_test=y)
        with pytest.raises(DataFormatError) as error:
            load_test_file(str(path), str(tmp_path), train)
        message = str(error.value)
        assert str(path) in message and field in message and what in message, message
    path = tmp_path / "good.npz"
    np.savez(path, x_test=images(4, 8, 8, 3), y_test=np.arange(4) % 3)
    x, _ = load_test_file(str(path), str(tmp_path), train)
    assert tuple(x.shape) == (4, 3, 8, 8)


@pytest.mark.parametrize(
    ("array", "what"),
    [
        (np.zeros((5, 2)), "shape (6, D)"),
        (np.zeros(6), "shape (6, D)"),
        (np.zeros((6, 0)), "at least one feature"),
        (
            np.array([[1.0], [np.nan], [1], [1], [1], [1]]),
            "1 values that are not finite",
        ),
        (np.full((6, 2), np.inf), "12 values that are not finite"),
        (np.full((6, 2), 1e39), "not finite"),  # beyond float32
        (np.array([["a"]] * 6), "numbers"),
        (np.ones((6, 2), dtype=bool), "numbers"),
    ],
)
def test_fedfomos_embedding_file_is_checked(tmp_path, array, what):
    path = tmp_path / "emb.npy"
    np.save(path, array)
    with pytest.raises(DataFormatError) as error:
        load_embedding(path, 6)
    assert str(path) in str(error.value) and what in str(error.value)
