"""FLICKR-AES: per-user ratings of image files, read from the published layout.

Used by FedPer's FLICKR-AES setting (:mod:`fedper.dataset`): the ratings CSV
(one row per worker and image), the images wherever the zip put them, and
their decoding to uint8 tensors.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from pflcore.data.images import (
    DataFormatError,
    DatasetNotFoundError,
    missing_dataset,
    reading,
)

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
        raise missing_dataset("flickr", base, how)
    path = base / labels_file
    if not path.is_file():
        found = sorted(base.rglob(labels_file))
        if not found:
            raise missing_dataset("flickr", path, how)
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
