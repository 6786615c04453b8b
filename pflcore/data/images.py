"""Datasets as in-memory uint8 tensors, read from their published on-disk formats.

A dataset is read once per process (``load_dataset`` is cached) into
``uint8`` tensors of shape ``(N, C, H, W)``; batches are normalised and
augmented later, on the training device (:mod:`pflcore.local.transforms`).
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pflcore.config import ConfigError
from pflcore.data.digests import note_bundled_digits, note_read

KNOWN_DATASETS = ("cifar10", "cifar100", "mnist", "digits", "npz")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "digits": 10}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing where the configuration points."""


class DataFormatError(ValueError):
    """A dataset's files exist but do not hold what the loader expects."""


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``(N, C, H, W)``, in [0, 1] units."""
    channels = int(x.shape[1])
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in x.split(4096):  # bounded memory on large sets
        values = chunk.to(torch.float64) / 255.0
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = x.numel() / channels
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset held in memory.

    Attributes
    ----------
    name : str
        Dataset name, e.g. ``"cifar10"``.
    x_train, y_train : torch.Tensor
        ``uint8`` images ``(N, C, H, W)`` and ``int64`` labels ``(N,)``.
    x_test, y_test : torch.Tensor or None
        The official test split, if the source has one.
    num_classes : int
        Number of classes.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int

    @property
    def channels(self) -> int:
        """Number of image channels."""
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        """Height (= width) of the stored images."""
        return int(self.x_train.shape[2])

    def pooled(self, include_test: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the training split, optionally concatenated with the test split."""
        if include_test and self.x_test is not None and self.y_test is not None:
            return (
                torch.cat([self.x_train, self.x_test]),
                torch.cat([self.y_train, self.y_test]),
            )
        return self.x_train, self.y_train

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        return channel_stats(self.x_train)


def missing_dataset(name: str, looked_at: Path, how: str) -> DatasetNotFoundError:
    """The one-line error for dataset ``name`` not found at ``looked_at``."""
    return DatasetNotFoundError(f"{name} not found: looked for {looked_at}. {how}")


def _to_tensors(
    x: np.ndarray, y: np.ndarray, layout: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert images to uint8 NCHW and labels to int64 ``(N,)``."""
    if x.dtype != np.uint8:
        raise DataFormatError(f"expected uint8 images, got {x.dtype}")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)  # Keras-style (N, 1) labels
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(
            f"labels must be integers of shape (N,), got {y.dtype} {y.shape}"
        )
    if len(x) != len(y):
        raise DataFormatError(f"{len(x)} images but {len(y)} labels")
    if layout == "NHW":
        x = x[:, None, :, :]
    elif layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    elif layout != "NCHW":
        raise DataFormatError(f"unknown layout {layout}")
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(
        y.astype(np.int64)
    )


READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    struct.error,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    zlib.error,
    UnicodeDecodeError,
)


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turn any failure to read ``path`` into one :class:`DataFormatError` line.

    Empty, truncated, corrupt or wrong-type files fail deep inside pickle,
    gzip, zip or NumPy with messages that name neither the file nor what was
    expected; this names both.
    """
    try:
        yield
    except DataFormatError:
        raise
    except READ_ERRORS as exc:
        if isinstance(exc, FileNotFoundError):
            raise DatasetNotFoundError(f"{what} not found: {path}") from exc
        size = path.stat().st_size if path.is_file() else 0
        text = " ".join(str(exc).split())  # one line, whatever the library wrote
        detail = "it is empty" if size == 0 else f"{type(exc).__name__}: {text}"
        raise DataFormatError(
            f"{path} is not a readable {what} ({detail}); replace the file"
        ) from exc
    note_read(path)  # provenance: summary.json records its sha256


def _read_cifar_pickle(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    with reading(path, "CIFAR pickle"):
        with path.open("rb") as handle:
            entry = pickle.load(handle, encoding="bytes")
        if not isinstance(entry, dict):
            raise DataFormatError(
                f"{path} is not a CIFAR pickle (it holds a {type(entry).__name__})"
            )
        data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key])
    if labels.shape != (data.shape[0],):
        raise DataFormatError(
            f"{path}: {data.shape[0]} images but labels of shape {labels.shape}"
        )
    return data, labels


def _download_torchvision(name: str, root: Path) -> None:
    """Fetch a dataset with torchvision (needs internet)."""
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST}[name]
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:  # offline, refused, corrupt archive
        raise DatasetNotFoundError(
            f"{name}: downloading into {root} failed ({exc}); copy the files there "
            "by hand (see datasets/README.md)"
        ) from exc


def _load_cifar(name: str, root: Path, download: bool) -> ImageData:
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_files = [folder / "test_batch"]
        label_key, classes = b"labels", 10
    else:
        folder = root / "cifar-100-python"
        train_files, test_files = [folder / "train"], [folder / "test"]
        label_key, classes = b"fine_labels", 100
    missing = [p for p in train_files + test_files if not p.is_file()]
    if missing and download:
        _download_torchvision(name, root)
        missing = [p for p in train_files + test_files if not p.is_file()]
    if missing:
        raise missing_dataset(
            name,
            missing[0],
            f"Extract the python version of {name} so that {folder} holds its "
            "pickles, or set dataset.download=true on a machine with internet "
            "access, or point dataset.source=npz and dataset.path at an .npz copy.",
        )
    parts = [_read_cifar_pickle(p, label_key) for p in train_files]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_cifar_pickle(test_files[0], label_key)
    xt, yt = _to_tensors(x_train, y_train, "NCHW")
    xs, ys = _to_tensors(x_test, y_test, "NCHW")
    return ImageData(name, xt, yt, xs, ys, classes)


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped), the format MNIST ships in."""
    opener = gzip.open if path.suffix == ".gz" else open
    with reading(path, "idx file"):
        with opener(path, "rb") as handle:
            raw = handle.read()
        if len(raw) < 4:
            raise DataFormatError(f"{path} is not an idx file ({len(raw)} bytes)")
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise DataFormatError(f"{path} is not an unsigned-byte idx file")
        shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataFormatError(
            f"{path}: header says {shape}, file holds {data.size} bytes"
        )
    return data.reshape(shape).copy()  # frombuffer views read-only bytes


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_mnist(root: Path, download: bool) -> ImageData:
    folder = root / "MNIST" / "raw"
    stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    paths = [_find_idx(folder, s) for s in stems]
    if any(p is None for p in paths) and download:
        _download_torchvision("mnist", root)
        paths = [_find_idx(folder, s) for s in stems]
    if any(p is None for p in paths):
        absent = stems[[p is None for p in paths].index(True)]
        raise missing_dataset(
            "mnist",
            folder / f"{absent}[.gz]",
            f"Copy the four MNIST idx files into {folder}, or set "
            "dataset.download=true on a machine with internet access.",
        )
    arrays = [_read_idx(p) for p in paths if p is not None]
    xt, yt = _to_tensors(arrays[0], arrays[1], "NHW")
    xs, ys = _to_tensors(arrays[2], arrays[3], "NHW")
    return ImageData("mnist", xt, yt, xs, ys, 10)


def _infer_layout(x: np.ndarray) -> str:
    if x.ndim == 3:
        return "NHW"
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return "NHWC"
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return "NCHW"
    raise DataFormatError(
        f"cannot infer the image layout of an array of shape {x.shape}"
    )


NPZ_FIELDS = ("x_train", "y_train", "x_test", "y_test")


def _npz_field(archive: Any, path: Path, field: str) -> np.ndarray:
    """One array of an ``.npz``; a field that is not a plain array is named."""
    try:
        return np.asarray(archive[field])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        text = " ".join(str(exc).split())
        raise DataFormatError(
            f"{path}: {field} is not a readable array ({type(exc).__name__}: {text})"
        ) from exc


def check_images(path: Path, field: str, x: np.ndarray) -> str:
    """``x`` must be a non-empty stack of square uint8 images; returns its layout.

    Layouts: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with 1 or 3
    channels.
    """
    where = f"{path}: {field}"
    if x.dtype != np.uint8:
        raise DataFormatError(f"{where} must hold uint8 images, got dtype {x.dtype}")
    if x.ndim not in (3, 4):
        raise DataFormatError(
            f"{where} must have shape (N, H, W), (N, H, W, C) or (N, C, H, W), "
            f"got {x.shape}"
        )
    if x.shape[0] == 0:
        raise DataFormatError(f"{where} holds no image")
    try:
        layout = _infer_layout(x)
    except DataFormatError:
        raise DataFormatError(
            f"{where} must have 1 or 3 channels (first or last), got shape {x.shape}"
        ) from None
    height, width = (x.shape[1], x.shape[2]) if layout != "NCHW" else x.shape[2:]
    if height != width or height == 0:
        raise DataFormatError(
            f"{where} must hold square images, got {height}x{width} (shape {x.shape})"
        )
    return layout


def check_labels(path: Path, field: str, y: np.ndarray, count: int) -> np.ndarray:
    """``y`` must be ``count`` non-negative integer labels; returns them as ``(N,)``."""
    where = f"{path}: {field}"
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)  # Keras-style (N, 1) labels
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"{where} must hold integer labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise DataFormatError(f"{where} must have shape (N,), got {y.shape}")
    if len(y) != count:
        raise DataFormatError(
            f"{where} holds {len(y)} labels for {count} images in "
            f"{field.replace('y_', 'x_')}"
        )
    if len(y) and int(y.min()) < 0:
        raise DataFormatError(f"{where} holds a negative label ({int(y.min())})")
    return y


def check_classes(
    path: Path, y_train: np.ndarray, y_test: np.ndarray | None, classes: int | None
) -> int:
    """The class count of an ``.npz``'s labels, checked.

    ``classes`` is a named dataset's own count (CIFAR-10 read from an
    ``.npz``): labels must lie below it. None (a user's own ``npz``
    dataset): the labels define the classes, so they must be contiguous,
    ``0..K-1`` with every class holding training samples (labels 0, 1 and 5
    would make classes 2..4 that no client can learn). Test labels must be
    classes the training split has. A label beyond the range would break the
    model's output layer only after Ray has started.
    """
    top = int(y_train.max()) + 1
    count = top if classes is None else classes
    if top > count:
        raise DataFormatError(
            f"{path}: y_train holds label {top - 1}, beyond the {count} classes "
            f"(0..{count - 1})"
        )
    if classes is None:
        empty = np.flatnonzero(np.bincount(y_train, minlength=count) == 0).tolist()
        if empty:
            shown = ", ".join(str(c) for c in empty[:10])
            shown += " ..." if len(empty) > 10 else ""
            raise DataFormatError(
                f"{path}: y_train has no sample of class {shown}; the labels must "
                f"be 0..{count - 1} with every class in the training split"
            )
    if y_test is not None and len(y_test) and int(y_test.max()) >= count:
        raise DataFormatError(
            f"{path}: y_test holds label {int(y_test.max())}, a class y_train does "
            f"not have (0..{count - 1})"
        )
    return count


def _load_npz(name: str, path: Path) -> ImageData:
    if not path.is_file():
        raise missing_dataset(
            name,
            path,
            "Set dataset.path to an .npz file with x_train and y_train "
            "(and optionally x_test, y_test).",
        )
    with reading(path, ".npz archive"), np.load(path) as archive:
        if not hasattr(archive, "files"):
            raise DataFormatError(f"{path} holds one array, not an .npz archive")
        keys = set(archive.files)
        if not {"x_train", "y_train"} <= keys:
            raise DataFormatError(
                f"{path} must contain x_train and y_train; it has {sorted(keys)}"
            )
        if ("x_test" in keys) != ("y_test" in keys):
            lone, other = (
                ("x_test", "y_test") if "x_test" in keys else ("y_test", "x_test")
            )
            raise DataFormatError(f"{path} has {lone} but no {other}")
        arrays = {k: _npz_field(archive, path, k) for k in NPZ_FIELDS if k in keys}
    layout = check_images(path, "x_train", arrays["x_train"])
    y_train = check_labels(path, "y_train", arrays["y_train"], len(arrays["x_train"]))
    y_test = None
    if "x_test" in arrays:
        x_test = arrays["x_test"]
        check_images(path, "x_test", x_test)
        if _image_shape(x_test) != _image_shape(arrays["x_train"]):
            raise DataFormatError(
                f"{path}: x_test images are {x_test.shape[1:]}, x_train's "
                f"{arrays['x_train'].shape[1:]}; both need the same layout and size"
            )
        y_test = check_labels(path, "y_test", arrays["y_test"], len(x_test))
    classes = check_classes(path, y_train, y_test, NUM_CLASSES.get(name))
    xt, yt = _to_tensors(arrays["x_train"], y_train, layout)
    xs = ys = None
    if y_test is not None:
        xs, ys = _to_tensors(arrays["x_test"], y_test, layout)
    return ImageData(name, xt, yt, xs, ys, classes)


def _image_shape(x: np.ndarray) -> tuple[int, int, int]:
    """(C, H, W) of a stack in any layout :func:`check_images` accepts."""
    layout = _infer_layout(x)
    if layout == "NHW":
        return (1, x.shape[1], x.shape[2])
    if layout == "NHWC":
        return (x.shape[3], x.shape[1], x.shape[2])
    return (x.shape[1], x.shape[2], x.shape[3])


def _load_digits() -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    note_bundled_digits()  # provenance: summary.json records its sha256
    # 8x8 images with intensities 0..16, scaled to the full uint8 range.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    xt, yt = _to_tensors(x, bunch.target, "NHW")
    return ImageData("digits", xt, yt, None, None, 10)


@lru_cache(maxsize=4)
def load_dataset(
    name: str,
    root: str,
    source: str = "default",
    path: str | None = None,
    download: bool = False,
) -> ImageData:
    """Load a dataset into memory once per process.

    Parameters
    ----------
    name : str
        One of ``cifar10``, ``cifar100``, ``mnist``, ``digits``, ``npz``.
    root : str
        Data root; torchvision formats live below it (``cifar-10-batches-py/``,
        ``cifar-100-python/``, ``MNIST/raw/``).
    source : str
        ``"default"`` for the dataset's published format, ``"npz"`` to read the
        same dataset from an ``.npz`` file at ``path``.
    path : str, optional
        The ``.npz`` file (absolute, or relative to ``root``).
    download : bool
        Fetch missing torchvision datasets (needs internet access).

    Returns
    -------
    ImageData
        The dataset as uint8 tensors.

    Raises
    ------
    DatasetNotFoundError
        If the files are missing; the message names the path looked at.
    ConfigError
        If the name or source is unknown.
    DataFormatError
        If the files are malformed.
    """
    if name not in KNOWN_DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {KNOWN_DATASETS}")
    base = Path(root).expanduser()
    if name == "npz" or source == "npz":
        if not path:
            raise ConfigError("dataset.path must name an .npz file for an npz source")
        file = Path(path).expanduser()
        return _load_npz(name, file if file.is_absolute() else base / file)
    if source != "default":
        raise ConfigError(f"unknown dataset.source {source!r}; use default or npz")
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, base, download)
    if name == "mnist":
        return _load_mnist(base, download)
    return _load_digits()
