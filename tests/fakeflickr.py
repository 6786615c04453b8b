"""A small FLICKR-AES in its published layout.

``<root>/flickr/40K/*.jpg`` (what FLICKR-AES-001.zip extracts to), next to
``FLICKR-AES_image_labeled_by_each_worker.csv`` (header ``worker, imagePair,
score`` with the published file's leading spaces) and
``FLICKR-AES_image_score.txt`` (``name mean`` per line).

Every image is one flat colour that encodes its index, so a test can tell
from decoded pixels which file a sample came from (JPEG keeps a flat colour
within a few levels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

LABELS_FILE = "FLICKR-AES_image_labeled_by_each_worker.csv"
SCORE_FILE = "FLICKR-AES_image_score.txt"


def image_name(index: int) -> str:
    """A file name shaped like the published ones."""
    return f"farm1_{index:03d}_{1000 + 7 * index}_{index:04x}a.jpg"


def colour(index: int) -> tuple[int, int, int]:
    """The flat colour of image ``index`` (unique for index < 4096)."""
    return (
        (index % 16) * 16 + 8,
        ((index // 16) % 16) * 16 + 8,
        ((index // 256) % 16) * 16 + 8,
    )


def index_of(pixel: np.ndarray) -> int:
    """Invert :func:`colour` from a decoded RGB pixel."""
    r, g, b = (round((float(v) - 8) / 16) for v in pixel)
    return r + 16 * g + 256 * b


@dataclass
class FakeFlickr:
    """What was written: one (worker, image, score) per rating, in file order."""

    folder: Path
    workers: list[str]
    images: list[str]
    scores: list[int]

    def ratings_of(self, worker: str) -> dict[str, int]:
        """``{image name: score}`` of one worker."""
        return {
            i: s
            for w, i, s in zip(self.workers, self.images, self.scores, strict=True)
            if w == worker
        }


def write_flickr(
    root: Path,
    counts: dict[str, int],
    num_images: int | None = None,
    seed: int = 0,
    folder: str = "flickr",
    image_folder: str = "40K",
    pad_values: bool = False,
    size: tuple[int, int] = (14, 10),
) -> FakeFlickr:
    """Write the three FLICKR-AES parts for workers with the given rating counts.

    Parameters
    ----------
    root : Path
        Data root.
    counts : dict
        ``{worker id: number of images it rates}``.
    num_images : int, optional
        Size of the image pool (default: the largest count).
    seed : int
        Seed of which images each worker rates and of the scores.
    folder, image_folder : str
        ``<root>/<folder>/<image_folder>/`` receives the images.
    pad_values : bool
        Also write a space after every comma in the data rows.
    size : tuple of int
        (width, height) of the images.
    """
    rng = np.random.default_rng(seed)
    num_images = num_images or max(counts.values())
    base = Path(root) / folder
    images_dir = base / image_folder
    images_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        Image.new("RGB", size, colour(i)).save(images_dir / image_name(i), quality=95)
    written = FakeFlickr(base, [], [], [])
    sep = ", " if pad_values else ","
    lines = ["worker, imagePair, score"]
    for worker, count in counts.items():
        for i in rng.choice(num_images, size=count, replace=False):
            score = int(rng.integers(1, 6))
            written.workers.append(worker)
            written.images.append(image_name(int(i)))
            written.scores.append(score)
            lines.append(sep.join([worker, image_name(int(i)), str(score)]))
    (base / LABELS_FILE).write_text("\n".join(lines) + "\n")
    means: dict[str, list[int]] = {}
    for name, score in zip(written.images, written.scores, strict=True):
        means.setdefault(name, []).append(score)
    (base / SCORE_FILE).write_text(
        "".join(f"{n} {np.mean(s):.4f}\n" for n, s in sorted(means.items()))
    )
    return written
