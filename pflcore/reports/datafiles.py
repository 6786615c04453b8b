"""The data files a run's configuration names, for runs that did not record them.

Runs record the files they read themselves (:mod:`pflcore.records.provenance`).
For a run made before that, :func:`files_named_by` lists the files its
``dataset`` settings name in the on-disk formats :mod:`pflcore.data.images` reads:
the ``.npz`` at ``dataset.path`` and ``dataset.test_path``, torchvision's
MNIST / EMNIST idx files and CIFAR pickles, scikit-learn's digits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pflcore.data.digests import UNKNOWN, name_under, sha256_of

MNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx(folder: Path, stem: str) -> Path:
    """``folder/stem``, or its ``.gz`` where only that exists."""
    plain = folder / stem
    gz = folder / f"{stem}.gz"
    return gz if not plain.is_file() and gz.is_file() else plain


def _below(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def files_named_by(dataset: dict[str, Any], root: Path) -> list[Path]:
    """The data files the run's ``dataset`` settings name, under ``root``."""
    name = str(dataset.get("name", ""))
    source = str(dataset.get("source", "default"))
    files: list[Path] = []
    if name == "npz" or source == "npz":
        if dataset.get("path"):
            files.append(_below(root, str(dataset["path"])))
    elif name == "mnist":
        files += [_idx(root / "MNIST" / "raw", stem) for stem in MNIST_STEMS]
    elif name == "emnist":
        split = str(dataset.get("split", "letters"))
        files += [
            _idx(root / "EMNIST" / "raw", f"emnist-{split}-{part}-{kind}")
            for part in ("train", "test")
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
        ]
    elif name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files += [folder / f"data_batch_{i}" for i in range(1, 6)]
        files.append(folder / "test_batch")
    elif name == "cifar100":
        folder = root / "cifar-100-python"
        files += [folder / "train", folder / "test"]
    if dataset.get("test_path"):
        files.append(_below(root, str(dataset["test_path"])))
    return files


def digests(dataset: dict[str, Any], root: Path) -> list[dict[str, str]]:
    """Name (under ``root``) and sha256 of each file the settings name.

    A file that is not there is listed with ``sha256`` unknown; digits (a
    file inside scikit-learn) is named by its path in that library.
    """
    if str(dataset.get("name")) == "digits":
        from importlib.resources import files

        bundled = Path(str(files("sklearn.datasets.data") / "digits.csv.gz"))
        return [
            {
                "path": "scikit-learn/datasets/data/digits.csv.gz",
                "sha256": sha256_of(bundled),
            }
        ]
    entries = []
    for path in files_named_by(dataset, root):
        entry = name_under(path, root)
        entry["sha256"] = (
            sha256_of(path) if path.is_file() else f"{UNKNOWN} (not found at import)"
        )
        entries.append(entry)
    return entries
