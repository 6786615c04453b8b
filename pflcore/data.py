"""Datasets as in-memory uint8 tensors, and batch-wise transforms on the device.

A dataset is read once per process (``load_dataset`` is cached) from its
published on-disk format into ``uint8`` tensors of shape ``(N, C, H, W)``.
Batches are normalised and augmented on the training device, never sample by
sample through PIL.
"""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from pflcore.config import ConfigError

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


def _missing(name: str, looked_at: Path, how: str) -> DatasetNotFoundError:
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
        raise _missing(
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
        raise _missing(
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


def _load_npz(name: str, path: Path) -> ImageData:
    if not path.is_file():
        raise _missing(
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
        x_train, y_train = archive["x_train"], archive["y_train"]
        has_test = {"x_test", "y_test"} <= keys
        x_test = archive["x_test"] if has_test else None
        y_test = archive["y_test"] if has_test else None
    layout = _infer_layout(x_train)
    xt, yt = _to_tensors(x_train, y_train, layout)
    xs = ys = None
    if x_test is not None and y_test is not None:
        xs, ys = _to_tensors(x_test, y_test, layout)
    labels = torch.cat([yt, ys]) if ys is not None else yt
    if int(labels.min()) < 0:
        raise DataFormatError(f"{path}: labels must be non-negative integers")
    return ImageData(name, xt, yt, xs, ys, int(labels.max()) + 1)


def _load_digits() -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
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
        data = _load_npz(name, file if file.is_absolute() else base / file)
        expected = NUM_CLASSES.get(name)
        if expected is not None and data.num_classes > expected:
            raise DataFormatError(
                f"{path}: labels exceed the {expected} classes of {name}"
            )
        if expected is not None:
            data = ImageData(
                name, data.x_train, data.y_train, data.x_test, data.y_test, expected
            )
        return data
    if source != "default":
        raise ConfigError(f"unknown dataset.source {source!r}; use default or npz")
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, base, download)
    if name == "mnist":
        return _load_mnist(base, download)
    return _load_digits()


# --------------------------------------------------------------------------
# Per-user ratings of image files (FLICKR-AES)
# --------------------------------------------------------------------------

FLICKR_HOW_TO = (
    "Download FLICKR-AES-001.zip and FLICKR-AES_image_labeled_by_each_worker.csv "
    "(https://github.com/alanspike/personalizedImageAesthetics), then "
    "`unzip FLICKR-AES-001.zip -d {folder}` and move the .csv into {folder} "
    "(the images may sit anywhere below it, e.g. in 40K/); or point "
    "dataset.root / dataset.folder at an existing copy."
)


@dataclass(frozen=True)
class Ratings:
    """One row per (user, item) rating, in file order.

    Attributes
    ----------
    users : numpy.ndarray
        User (rater) id of each row, as strings.
    items : numpy.ndarray
        Rated item of each row (an image file name), as strings.
    scores : numpy.ndarray
        Integer score of each row (``int64``).
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray


def read_ratings_csv(
    path: Path,
    user_column: str = "worker",
    item_column: str = "imagePair",
    score_column: str = "score",
) -> Ratings:
    """Read a ratings table: one row per user, item and integer score.

    Header names and values are stripped of surrounding whitespace (the
    published FLICKR-AES file writes ``worker, imagePair, score``).

    Parameters
    ----------
    path : Path
        The CSV file.
    user_column, item_column, score_column : str
        Header names of the three columns used (others are ignored).

    Returns
    -------
    Ratings
        The rows in file order.

    Raises
    ------
    DataFormatError
        If a column is missing, a row is short, or a score is not an integer.
    """
    users: list[str] = []
    items: list[str] = []
    scores: list[int] = []
    with (
        reading(path, "ratings CSV"),
        path.open(newline="", encoding="utf-8-sig") as handle,
    ):
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        wanted = (user_column, item_column, score_column)
        absent = [c for c in wanted if c not in header]
        if absent:
            raise DataFormatError(f"{path}: no column {absent} in the header {header}")
        iu, ii, isc = (header.index(c) for c in wanted)
        width = max(iu, ii, isc) + 1
        for line, row in enumerate(reader, start=2):
            if not any(field.strip() for field in row):
                continue
            if len(row) < width:
                raise DataFormatError(f"{path}:{line}: expected {width} fields: {row}")
            text = row[isc].strip()
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            if not value.is_integer():
                raise DataFormatError(f"{path}:{line}: score {text!r} is no integer")
            users.append(row[iu].strip())
            items.append(row[ii].strip())
            scores.append(int(value))
    return Ratings(
        np.asarray(users, dtype=str),
        np.asarray(items, dtype=str),
        np.asarray(scores, dtype=np.int64),
    )


@lru_cache(maxsize=2)
def read_flickr_ratings(folder: str, labels_file: str) -> Ratings:
    """FLICKR-AES's per-worker ratings, read once per process.

    Parameters
    ----------
    folder : str
        The FLICKR-AES folder (e.g. ``<root>/flickr``).
    labels_file : str
        ``FLICKR-AES_image_labeled_by_each_worker.csv``: looked for directly in
        ``folder``, else anywhere below it.

    Returns
    -------
    Ratings
        ``users`` are worker ids, ``items`` image file names, ``scores`` 1..5.

    Raises
    ------
    DatasetNotFoundError
        If the folder or the CSV is missing.
    DataFormatError
        If the CSV is malformed or a score lies outside 1..5.
    """
    base = Path(folder).expanduser()
    how = FLICKR_HOW_TO.format(folder=base)
    if not base.is_dir():
        raise _missing("flickr", base, how)
    path = base / labels_file
    if not path.is_file():
        found = sorted(base.rglob(labels_file))
        if not found:
            raise _missing("flickr", path, how)
        path = found[0]
    ratings = read_ratings_csv(path)
    if ratings.scores.size == 0:
        raise DataFormatError(f"{path} holds no ratings")
    bad = (ratings.scores < 1) | (ratings.scores > 5)
    if bad.any():
        raise DataFormatError(
            f"{path}: scores must lie in 1..5, found {ratings.scores[bad][0]}"
        )
    return ratings


def find_files(folder: Path, names: list[str], subfolder: str = "") -> list[Path]:
    """Locate files by name: in ``folder/subfolder`` first, else anywhere below.

    Parameters
    ----------
    folder : Path
        The folder searched (recursively, in sorted order, only if needed).
    names : list of str
        File names (not paths).
    subfolder : str
        Where the files normally are, relative to ``folder``.

    Returns
    -------
    list of Path
        One path per name, in order.

    Raises
    ------
    DatasetNotFoundError
        Naming the first file found nowhere and how many are missing.
    """
    usual = folder / subfolder
    paths: dict[str, Path] = {}
    missing = []
    for name in names:
        candidate = usual / name
        if candidate.is_file():
            paths[name] = candidate
        else:
            missing.append(name)
    if missing:
        index: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for filename in sorted(filenames):
                index.setdefault(filename, Path(dirpath) / filename)
        for name in missing:
            if name in index:
                paths[name] = index[name]
        missing = [name for name in missing if name not in paths]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} of {len(names)} image files not found: looked for "
            f"{usual / missing[0]} and searched {folder} for it. "
            + FLICKR_HOW_TO.format(folder=folder)
        )
    return [paths[name] for name in names]


def decode_images(paths: list[Path], size: int) -> torch.Tensor:
    """Decode image files with PIL into uint8 RGB ``(N, 3, size, size)``.

    Each image is resized (bilinear, aspect ratio not kept) to ``size``; JPEGs
    are decoded at a reduced DCT scale first when that still exceeds ``size``.

    Raises
    ------
    DataFormatError
        Naming a file PIL cannot read.
    """
    from PIL import Image

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image.draft("RGB", (size, size))
                rgb = image.convert("RGB").resize(
                    (size, size), Image.Resampling.BILINEAR
                )
                out[i] = np.asarray(rgb).transpose(2, 0, 1)
        except OSError as exc:  # includes PIL.UnidentifiedImageError
            raise DataFormatError(f"cannot decode {path}: {exc}") from exc
    return torch.from_numpy(out)


class BatchTransform:
    """Turn a uint8 batch into a normalised float batch on its device.

    The random augmentations can be drawn apart from the transform
    (:meth:`draw`, on the CPU generator, in the order :meth:`__call__` draws
    them) and applied later (:meth:`apply`, with the draws on the batch's
    device): a training loop draws a whole call's batches up front and moves
    them to the device in one copy (:mod:`pflcore.batching`). The
    normalisation constants are kept on each device they are used on.

    Parameters
    ----------
    mean, std : sequence of float
        Per-channel statistics in [0, 1] units.
    image_size : int, optional
        Resize (bilinear) to this side length; ``None`` keeps the stored size.
    crop_padding : int
        Random-crop padding in pixels (0 disables the crop); training only.
    flip : bool
        Random horizontal flips; training only.
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        image_size: int | None = None,
        crop_padding: int = 0,
        flip: bool = False,
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.image_size = image_size
        self.crop_padding = crop_padding
        self.flip = flip
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(
        self,
        x: torch.Tensor,
        train: bool,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Transform a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``uint8`` batch ``(B, C, H, W)`` on the training device.
        train : bool
            Apply the random augmentations.
        generator : torch.Generator, optional
            CPU generator for the augmentation draws (reproducibility).

        Returns
        -------
        torch.Tensor
            ``float32`` batch on the same device.
        """
        if not train:
            return self.apply(x, None)
        draws = [d.to(x.device) for d in self.draw(int(x.shape[0]), generator)]
        return self.apply(x, draws)

    def draw(
        self, batch: int, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """The augmentation draws for a training batch of ``batch`` samples.

        Returns
        -------
        list of torch.Tensor
            CPU tensors of shape ``(batch,)``: the crop's row and column
            offsets (``int64``) when cropping, then the flip mask (``bool``)
            when flipping; empty without augmentation.
        """
        draws: list[torch.Tensor] = []
        if self.crop_padding > 0:
            draws.extend(crop_offsets(batch, self.crop_padding, generator))
        if self.flip:
            draws.append(torch.rand(batch, generator=generator) < 0.5)
        return draws

    def apply(self, x: torch.Tensor, draws: list[torch.Tensor] | None) -> torch.Tensor:
        """Transform a batch with given augmentation draws (``None``: evaluation).

        Parameters
        ----------
        x : torch.Tensor
            ``uint8`` batch ``(B, C, H, W)``.
        draws : list of torch.Tensor or None
            What :meth:`draw` returned for this batch, on ``x``'s device;
            ``None`` applies no augmentation.

        Returns
        -------
        torch.Tensor
            ``float32`` batch on ``x``'s device.
        """
        out = x.to(torch.float32) / 255.0  # never modifies the caller's tensor
        if draws is not None:
            rest = iter(draws)
            if self.crop_padding > 0:
                out = crop_at(out, self.crop_padding, next(rest), next(rest))
            if self.flip:
                flip = next(rest)
                out = torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)
        if self.image_size is not None and out.shape[-1] != self.image_size:
            out = F.interpolate(
                out,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
            )
        mean, std = self.constants(out.device)
        return (out - mean) / std

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalisation mean and std on ``device`` (moved there once)."""
        if device not in self._constants:
            self._constants[device] = (self.mean.to(device), self.std.to(device))
        return self._constants[device]


def crop_offsets(
    batch: int, padding: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random row and column offsets in ``[0, 2 * padding]``, one per sample (CPU)."""
    off_y = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    off_x = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    return off_y, off_x


def crop_at(
    x: torch.Tensor, padding: int, off_y: torch.Tensor, off_x: torch.Tensor
) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at the given offsets.

    ``off_y`` and ``off_x`` (``int64``, one per sample, on ``x``'s device) are
    the top-left corners in the padded image; the whole batch is cropped in
    one gather.
    """
    batch, channels, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = off_y.view(-1, 1) + torch.arange(height, device=off_y.device)
    cols = off_x.view(-1, 1) + torch.arange(width, device=off_x.device)
    batch_idx = torch.arange(batch, device=x.device).view(-1, 1, 1, 1)
    chan_idx = torch.arange(channels, device=x.device).view(1, -1, 1, 1)
    return padded[
        batch_idx,
        chan_idx,
        rows.view(batch, 1, height, 1),
        cols.view(batch, 1, 1, width),
    ]


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at random offsets.

    Each sample gets its own offset (drawn on the CPU generator); the whole
    batch is cropped in one gather.
    """
    off_y, off_x = crop_offsets(int(x.shape[0]), padding, generator)
    return crop_at(x, padding, off_y.to(x.device), off_x.to(x.device))
