"""EMNIST from torchvision's on-disk idx files or from an upright ``.npz`` copy.

Two facts every EMNIST loader must get right, made explicit here:

* **Orientation.** The official idx files (what torchvision's ``EMNIST``
  reads from ``<root>/EMNIST/raw/``) store every image *transposed*: row r of
  the stored array is column r of the upright letter. They are transposed
  back here. An ``.npz`` copy states its own orientation
  (``npz_orientation``); the project's offline EMNIST-letters copy is
  upright.
* **Labels.** The ``letters`` split numbers its 26 classes 1..26 (torchvision
  keeps a never-used class 0, "N/A"). They are shifted to 0..25 here, for
  either source. The other splits already start at 0.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from pflcore.config import ConfigError
from pflcore.data.images import (
    DataFormatError,
    DatasetNotFoundError,
    ImageData,
    _find_idx,
    _read_idx,
    _to_tensors,
    check_images,
    check_labels,
    reading,
)

EMNIST_CLASSES = {
    "letters": 26,
    "balanced": 47,
    "byclass": 62,
    "bymerge": 47,
    "digits": 10,
    "mnist": 10,
}
LABEL_OFFSET = {"letters": 1}
ORIENTATIONS = ("upright", "transposed")


def upright(images: np.ndarray, orientation: str) -> np.ndarray:
    """Return ``(N, H, W)`` images upright, given how they are stored.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, H, W)`` uint8 images.
    orientation : str
        ``"upright"`` or ``"transposed"`` (the official idx files).
    """
    if orientation not in ORIENTATIONS:
        raise ConfigError(
            f"EMNIST orientation must be one of {ORIENTATIONS}, got {orientation!r}"
        )
    if images.ndim != 3:
        raise DataFormatError(f"expected (N, H, W) images, got shape {images.shape}")
    return images if orientation == "upright" else images.transpose(0, 2, 1)


def shift_labels(labels: np.ndarray, split: str) -> np.ndarray:
    """Map the split's stored labels to 0..C-1, checking their range.

    Raises
    ------
    DataFormatError
        If a label falls outside the split's stored range.
    """
    offset = LABEL_OFFSET.get(split, 0)
    classes = EMNIST_CLASSES[split]
    labels = np.asarray(labels).astype(np.int64)
    if labels.size and (labels.min() < offset or labels.max() >= classes + offset):
        raise DataFormatError(
            f"EMNIST-{split} labels must lie in {offset}..{classes + offset - 1}, "
            f"found {labels.min()}..{labels.max()}"
        )
    return labels - offset


def _load_idx(root: Path, split: str) -> tuple[np.ndarray, ...]:
    folder = root / "EMNIST" / "raw"
    stems = [
        f"emnist-{split}-{part}-{kind}"
        for part in ("train", "test")
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    ]
    paths = []
    for stem in stems:
        path = _find_idx(folder, stem) or _find_idx(folder / "gzip", stem)
        if path is None:
            raise DatasetNotFoundError(
                f"emnist not found: looked for {folder / stem}[.gz]. Extract the "
                f"official EMNIST gzip.zip so that {folder} holds the emnist-{split}-* "
                "idx files (torchvision's layout), or use dataset.source=npz with an "
                "upright .npz copy."
            )
        paths.append(path)
    return tuple(_read_idx(p) for p in paths)


def _load_npz(path: Path) -> tuple[np.ndarray, ...]:
    if not path.is_file():
        raise DatasetNotFoundError(
            f"emnist not found: looked for {path}. Set dataset.path to an .npz with "
            "x_train, y_train, x_test, y_test."
        )
    with reading(path, ".npz archive"), np.load(path) as archive:
        if not hasattr(archive, "files"):
            raise DataFormatError(f"{path} holds one array, not an .npz archive")
        wanted = ("x_train", "y_train", "x_test", "y_test")
        absent = [k for k in wanted if k not in archive.files]
        if absent:
            raise DataFormatError(f"{path} lacks {absent}; it has {archive.files}")
        arrays = {k: np.asarray(archive[k]) for k in wanted}
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        check_images(path, f"x_{split}", x)
        if x.ndim != 3:
            raise DataFormatError(
                f"{path}: x_{split} must hold gray (N, H, W) images, got {x.shape}"
            )
        check_labels(path, f"y_{split}", arrays[f"y_{split}"], len(x))
    return tuple(arrays[k] for k in wanted)


@lru_cache(maxsize=2)
def load_emnist(
    root: str,
    split: str = "letters",
    source: str = "default",
    path: str | None = None,
    npz_orientation: str = "upright",
) -> ImageData:
    """Load an EMNIST split upright, labels 0..C-1, once per process.

    Parameters
    ----------
    root : str
        Data root; the idx files live in ``<root>/EMNIST/raw/``.
    split : str
        ``letters``, ``balanced``, ``byclass``, ``bymerge``, ``digits`` or ``mnist``.
    source : str
        ``"default"``: torchvision's idx files (stored transposed);
        ``"npz"``: the ``.npz`` at ``path`` (relative to ``root`` unless absolute).
    path : str, optional
        The ``.npz`` file.
    npz_orientation : str
        How the ``.npz`` stores its images: ``"upright"`` or ``"transposed"``.

    Returns
    -------
    ImageData
        Named ``emnist``, uint8 ``(N, 1, 28, 28)`` upright images.

    Raises
    ------
    ConfigError
        Unknown split, source or orientation.
    DatasetNotFoundError
        Missing files (the message names the path looked at).
    DataFormatError
        Malformed files or labels outside the split's range.
    """
    if split not in EMNIST_CLASSES:
        raise ConfigError(
            f"unknown EMNIST split {split!r}; choose one of {list(EMNIST_CLASSES)}"
        )
    base = Path(root).expanduser()
    if source == "default":
        x_train, y_train, x_test, y_test = _load_idx(base, split)
        orientation = "transposed"
    elif source == "npz":
        if not path:
            raise ConfigError("dataset.path must name an .npz file for an npz source")
        file = Path(path).expanduser()
        x_train, y_train, x_test, y_test = _load_npz(
            file if file.is_absolute() else base / file
        )
        orientation = npz_orientation
    else:
        raise ConfigError(f"unknown dataset.source {source!r}; use default or npz")
    xt, yt = _to_tensors(
        upright(x_train, orientation), shift_labels(y_train, split), "NHW"
    )
    xs, ys = _to_tensors(
        upright(x_test, orientation), shift_labels(y_test, split), "NHW"
    )
    return ImageData("emnist", xt, yt, xs, ys, EMNIST_CLASSES[split])
