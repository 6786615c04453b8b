"""EMNIST written in its two on-disk forms: torchvision's idx files and an npz copy.

The idx files store every image transposed (as the official EMNIST release
does); the npz copy stores them upright (as the project's offline
EMNIST-letters copy does). Letters labels are 1..26 in both.

Each image is noise plus a mark that is not symmetric under transposition: a
bright bar along the top rows of the upright image whose length depends on the
label, so a loader that gets the orientation wrong is caught.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def upright_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (N, 28, 28) upright images: a top bar of label-dependent length."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(labels.size, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 0:3, : 2 + int(label) % 26] = 255
    return images


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def letters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels 1..26 (each about equally often) and their upright images."""
    labels = (np.arange(n) % 26 + 1).astype(np.uint8)
    np.random.default_rng(seed).shuffle(labels)
    return labels, upright_images(labels, seed + 1)


def write_emnist_idx(
    root: Path,
    split: str = "letters",
    train: int = 520,
    test: int = 104,
    gz: bool = True,
) -> dict[str, np.ndarray]:
    """Write ``<root>/EMNIST/raw/emnist-<split>-{train,test}-*`` (transposed images).

    Returns the upright images and the on-disk labels written.
    """
    folder = Path(root) / "EMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, n in (("train", train), ("test", test)):
        labels, images = letters(n, seed=n)
        stored = images.transpose(0, 2, 1)  # the official files are transposed
        for kind, array in (("images-idx3", stored), ("labels-idx1", labels)):
            path = folder / f"emnist-{split}-{part}-{kind}-ubyte"
            if gz:
                with gzip.open(f"{path}.gz", "wb") as handle:
                    handle.write(_idx(array))
            else:
                path.write_bytes(_idx(array))
        written[f"x_{part}"], written[f"y_{part}"] = images, labels
    return written


def write_emnist_npz(
    path: Path, train: int = 520, test: int = 104
) -> dict[str, np.ndarray]:
    """Write an upright npz copy (x_train, y_train 1..26, x_test, y_test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    y_train, x_train = letters(train, seed=train)
    y_test, x_test = letters(test, seed=test)
    arrays = {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
    }
    np.savez(path, **arrays)
    return arrays
