"""Small datasets written in the real on-disk formats the loaders read.

The images are random noise with a per-class brightness offset, so a model
can learn something in a couple of rounds.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def class_images(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 images whose mean brightness depends on the label."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 96, size=(labels.size, *shape))
    offset = (labels.reshape(-1, *([1] * len(shape))) * 16) % 160
    return (noise + offset).astype(np.uint8)


def write_cifar10(
    root: Path, per_batch: int = 100, test: int = 100, seed: int = 0
) -> dict:
    """Write ``cifar-10-batches-py`` (5 train batches, test batch, meta).

    Returns the images (N, 32, 32, 3) and labels written, for checks.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {"x_train": [], "y_train": []}
    for i in range(1, 7):
        n = per_batch if i <= 5 else test
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = class_images(labels, (32, 32, 3), seed + i)
        entry = {
            b"batch_label": f"batch {i}".encode(),
            b"labels": labels.tolist(),
            # rows: the R, G and B planes of a row-major 32x32 image
            b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072),
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)],
        }
        name = f"data_batch_{i}" if i <= 5 else "test_batch"
        with (folder / name).open("wb") as handle:
            pickle.dump(entry, handle)
        if i <= 5:
            written["x_train"].append(images)
            written["y_train"].append(labels)
        else:
            written["x_test"], written["y_test"] = [images], [labels]
    with (folder / "batches.meta").open("wb") as handle:
        names = [f"class{c}".encode() for c in range(10)]
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, handle)
    return {k: np.concatenate(v) for k, v in written.items()}


def write_cifar100(
    root: Path, train: int = 400, test: int = 200, seed: int = 0
) -> dict:
    """Write ``cifar-100-python/{train,test,meta}``; returns what was written."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in (("train", train), ("test", test)):
        fine = np.arange(n) % 100
        images = class_images(fine, (32, 32, 3), seed + n)
        entry = {
            b"filenames": [f"{name}_{j}.png".encode() for j in range(n)],
            b"batch_label": name.encode(),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": (fine // 5).tolist(),
            b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072),
        }
        with (folder / name).open("wb") as handle:
            pickle.dump(entry, handle)
        written[f"x_{name}"], written[f"y_{name}"] = images, fine
    with (folder / "meta").open("wb") as handle:
        pickle.dump(
            {
                b"fine_label_names": [f"f{c}".encode() for c in range(100)],
                b"coarse_label_names": [f"c{c}".encode() for c in range(20)],
            },
            handle,
        )
    return written


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(
    root: Path, train: int = 300, test: int = 100, seed: int = 0, gz: bool = True
) -> dict:
    """Write ``MNIST/raw/*-idx?-ubyte[.gz]``; returns what was written."""
    folder = Path(root) / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n in (("train", train), ("t10k", test)):
        labels = np.arange(n) % 10
        images = class_images(labels, (28, 28), seed + n)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = folder / f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(array)
            if gz:
                with gzip.open(f"{path}.gz", "wb") as handle:
                    handle.write(data)
            else:
                path.write_bytes(data)
        split = "train" if prefix == "train" else "test"
        written[f"x_{split}"], written[f"y_{split}"] = images, labels
    return written
