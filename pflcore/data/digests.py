"""The data files a process read, and their sha256, named under the data root.

The loaders call :func:`note_read` where they open a file; the run's
provenance (:mod:`pflcore.records.provenance`) lists them with their digests.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

UNKNOWN = "unknown"
DATA_ROOT = "<data root>"

_lock = threading.Lock()
_read: dict[Path, str | None] = {}  # resolved path -> label (None: name by the root)
_digests: dict[tuple[Path, int, int], str] = {}


def note_read(path: str | Path, label: str | None = None) -> None:
    """Register that this process read the data file ``path``.

    Parameters
    ----------
    path : str or Path
        The file as the loader opened it.
    label : str, optional
        The name to record instead of the path under the data root (e.g. a
        file that ships inside a library).
    """
    resolved = Path(path).expanduser().resolve()
    with _lock:
        _read.setdefault(resolved, label)


def note_bundled_digits() -> None:
    """Register scikit-learn's bundled digits file (``load_digits`` reads it)."""
    from importlib.resources import files

    resource = files("sklearn.datasets.data") / "digits.csv.gz"
    note_read(str(resource), label="scikit-learn/datasets/data/digits.csv.gz")


def files_read() -> list[tuple[Path, str | None]]:
    """The data files registered so far, in the order they were first read."""
    with _lock:
        return list(_read.items())


def sha256_of(path: Path) -> str:
    """The file's sha256 (hex), computed once per path, size and mtime."""
    stat = path.stat()
    key = (path, stat.st_size, stat.st_mtime_ns)
    with _lock:
        cached = _digests.get(key)
    if cached is not None:
        return cached
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    with _lock:
        _digests[key] = digest
    return digest


def name_under(path: Path, root: str | Path | None) -> dict[str, str]:
    """How a record names ``path``: relative to ``root``, else its file name.

    Returns
    -------
    dict
        ``{"path": ...}``, plus ``"where": "outside the data root"`` when the
        file does not lie below ``root``.
    """
    if root is not None:
        try:
            relative = path.resolve().relative_to(Path(root).expanduser().resolve())
            return {"path": relative.as_posix()}
        except ValueError:
            pass
    return {"path": path.name, "where": "outside the data root"}


def data_files(root: str | Path | None) -> list[dict[str, str]]:
    """Name and sha256 of every data file this process read.

    A file that has gone since it was read is listed with ``"sha256":
    "unknown (file no longer readable)"``.
    """
    entries = []
    for path, label in files_read():
        entry = {"path": label} if label else name_under(path, root)
        try:
            entry["sha256"] = sha256_of(path)
        except OSError:
            entry["sha256"] = f"{UNKNOWN} (file no longer readable)"
        entries.append(entry)
    return entries
