"""Copy a finished run folder into the committed records, portable and traced.

``python -m pflcore.reports.import_run SRC DEST [--commit SHA]
[--data-root DIR]`` copies run folder SRC to DEST (e.g.
``_static/runs/fedfomo_paper_latent/seed1/fedfomo_m5``): ``summary.json``
and every ``.csv`` record (``rounds``, ``clients``, ``partition``,
``affinity``, ``failures``), never ``checkpoint.pkl``, logs or tracker
folders. Absolute paths become ``<data root>/...`` or ``<local path>``
(:mod:`pflcore.reports.portable`).

A run that recorded its provenance keeps it. For a run made before runs
did, the importer adds what is really known, marked ``"recorded": "at
import"``: the command from the run's ``.hydra/overrides.yaml``, the
sha256 of the data files its configuration names (hashed now, from
``--data-root``), and the code's commit only as the operator states it
(``--commit``; otherwise unknown).

With ``--diverged``, a run that diverged (it failed with the suite's
non-finite-loss error, :func:`~pflcore.records.results.diverged_round`) is
imported too, its rounds up to the divergence: a tuning grid records the
points that diverge, which the tables show as diverged and never choose.

``python -m pflcore.reports.import_run --in-place FOLDER ... --data-root
DIR`` applies the same rewrite to run folders already committed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from pflcore.data.digests import UNKNOWN
from pflcore.records.provenance import portable_text
from pflcore.records.results import diverged_round
from pflcore.reports.datafiles import digests
from pflcore.reports.portable import portable_json, portable_string

RECORD_SUFFIXES = (".csv",)
COMMIT = re.compile(r"[0-9a-f]{7,40}")


class RunImportError(ValueError):
    """The run cannot be imported (unfinished, missing records, bad option)."""


def _overrides(folder: Path) -> list[str] | None:
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    items = yaml.safe_load(path.read_text()) or []
    return [str(item) for item in items]


def _config_name(folder: Path) -> str | None:
    path = folder / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    name = data.get("hydra", {}).get("job", {}).get("config_name")
    return None if name is None else str(name)


def backfilled(
    summary: dict[str, Any], folder: Path, root: Path | None, commit: str | None
) -> dict[str, Any]:
    """The provenance entry for a run that did not record one.

    Parameters
    ----------
    summary : dict
        The run's ``summary.json``.
    folder : Path
        The run folder (its ``.hydra/`` holds the overrides, if kept).
    root : Path, optional
        Where the data files are on this machine (None: not hashed).
    commit : str, optional
        The code's commit as the operator states it.
    """
    dataset = summary.get("config", {}).get("dataset", {})
    overrides = _overrides(folder)
    if overrides is None:
        command: dict[str, Any] = {
            "overrides": UNKNOWN,
            "note": "the run folder kept no .hydra/overrides.yaml",
        }
    else:
        portable = [portable_text(item, root) for item in overrides]
        name = _config_name(folder)
        entry = f"python -m {name}.main" if name else "<entry point>"
        command = {
            "overrides": portable,
            "line": " ".join([entry, *portable]),
            "source": ".hydra/overrides.yaml; the entry point from the config name "
            "in .hydra/hydra.yaml",
        }
    if root is None:
        files: list[dict[str, str]] | str = f"{UNKNOWN} (no data root at import)"
    else:
        files = digests(dataset, root)
    return {
        "recorded": "at import",
        "code": {
            "commit": commit or UNKNOWN,
            "dirty": UNKNOWN,
            "untracked_files": UNKNOWN,
            "source": (
                "stated by the operator at import" if commit else "not recorded"
            ),
        },
        "data_files": files,
        "data_files_source": "hashed at import from the files the config names",
        "command": command,
    }


def _root_of(summary: dict[str, Any], given: Path | None) -> Path | None:
    if given is not None:
        return given
    recorded = summary.get("config", {}).get("dataset", {}).get("root")
    if isinstance(recorded, str) and Path(recorded).expanduser().is_dir():
        return Path(recorded).expanduser()
    return None


def portable_summary(
    summary: dict[str, Any], folder: Path, root: Path | None, commit: str | None
) -> dict[str, Any]:
    """``summary`` with provenance (kept or backfilled) and no absolute path."""
    recorded_root = summary.get("config", {}).get("dataset", {}).get("root")
    out = dict(summary)
    if "provenance" not in out:
        out["provenance"] = backfilled(summary, folder, root, commit)
    # paths are named relative to the root the run recorded, else the given one
    names_root = recorded_root if isinstance(recorded_root, str) else root
    out = portable_json(out, names_root)
    return dict(portable_json(out, root))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def import_run(
    src: Path,
    dest: Path,
    *,
    root: Path | None = None,
    commit: str | None = None,
    diverged: bool = False,
) -> list[Path]:
    """Copy run ``src`` to ``dest`` (see the module docstring); the files written.

    ``diverged`` admits a run that diverged as well as a completed one.

    Raises
    ------
    RunImportError
        If ``src`` is not a completed run (nor, with ``diverged``, a diverged
        one) or ``dest`` already exists.
    """
    summary_path = src / "summary.json"
    if not summary_path.is_file():
        raise RunImportError(f"{src} holds no summary.json: not a run folder")
    summary = json.loads(summary_path.read_text())
    admitted = summary.get("status") == "completed" or (
        diverged and diverged_round(summary) is not None
    )
    if not admitted:
        raise RunImportError(
            f"{src} is not a completed run (status {summary.get('status')!r})"
        )
    if dest.exists():
        raise RunImportError(f"{dest} exists; remove it first to replace it")
    root = _root_of(summary, root)
    dest.mkdir(parents=True)
    written = [dest / "summary.json"]
    _write_json(written[0], portable_summary(summary, src, root, commit))
    names_root = summary.get("config", {}).get("dataset", {}).get("root")
    for record in sorted(src.iterdir()):
        if record.is_file() and record.suffix in RECORD_SUFFIXES:
            target = dest / record.name
            target.write_text(portable_string(record.read_text(), names_root))
            shutil.copymode(record, target)
            written.append(target)
    return written


def rewrite_in_place(
    folder: Path, *, root: Path | None = None, commit: str | None = None
) -> None:
    """Make an already committed run folder's ``summary.json`` portable."""
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    root = _root_of(summary, root)
    _write_json(path, portable_summary(summary, folder, root, commit))


def _commit(text: str | None) -> str | None:
    if text is not None and not COMMIT.fullmatch(text):
        raise RunImportError(f"--commit expects 7 to 40 hex digits, got {text!r}")
    return text


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="SRC DEST, or FOLDER ...")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="rewrite committed run folders instead of copying SRC to DEST",
    )
    parser.add_argument("--commit", default=None, help="the code's commit, if known")
    parser.add_argument(
        "--diverged",
        action="store_true",
        help="also import a run that diverged (failed with a non-finite loss)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="where the run's data files are here (to hash them)",
    )
    args = parser.parse_args(argv)
    try:
        commit = _commit(args.commit)
        if args.in_place:
            for folder in args.paths:
                rewrite_in_place(folder, root=args.data_root, commit=commit)
                print(f"rewrote {folder / 'summary.json'}")
            return
        if len(args.paths) != 2:
            raise RunImportError("expected SRC DEST (or --in-place FOLDER ...)")
        written = import_run(
            args.paths[0],
            args.paths[1],
            root=args.data_root,
            commit=commit,
            diverged=args.diverged,
        )
    except (RunImportError, OSError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    for path in written:
        print(f"wrote {path}", file=sys.stdout)


if __name__ == "__main__":
    main()
