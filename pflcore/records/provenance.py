"""Where a run's numbers come from: code commit, data digests, command line.

``summary.json`` carries a ``provenance`` entry (see :func:`provenance`):

* ``code``: the commit of the checkout the suite was imported from
  (``git rev-parse HEAD``), whether tracked files differ from it
  (``dirty``) and how many untracked, non-ignored files it holds; every
  field is ``"unknown"`` where the suite is not a git checkout (an
  installed wheel, a SuperNode) or git is missing.
* ``data_files``: the sha256 of every data file this process read, each
  named by its path under the data root (``cifar10/cifar10_train.npz``),
  never by the machine's absolute path. A file outside the data root is
  named by its file name and ``"where": "outside the data root"``; a file
  that ships inside a library (scikit-learn's digits) by its path in that
  library. The loaders call :func:`note_read` where they open a file. A
  multirun's jobs share one process and its dataset cache, so a job lists
  every data file its process has read.
* ``command``: the Hydra overrides of this run (the command that reruns it
  alone), where a Hydra job runs in this process.

Hashing is done once per file and process, cached by path, size and
modification time, so writing the summary after every round costs nothing
after the first time.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from pflcore.data.digests import DATA_ROOT, UNKNOWN, data_files

LOCAL_PATH = "<local path>"


def _git(repo: Path, *args: str) -> str | None:
    """``git -C repo ARGS`` output, or None where git or the checkout is missing."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def code_state(repo: str | Path) -> dict[str, Any]:
    """The commit of the git checkout at ``repo`` and whether it is dirty.

    Returns
    -------
    dict
        ``commit`` (40 hex digits), ``dirty`` (tracked files differ from the
        commit) and ``untracked_files`` (untracked, non-ignored files); each
        ``"unknown"`` when ``repo`` is not inside a git checkout.
    """
    repo = Path(repo)
    head = _git(repo, "rev-parse", "HEAD")
    if head is None:
        return {"commit": UNKNOWN, "dirty": UNKNOWN, "untracked_files": UNKNOWN}
    tracked = _git(repo, "status", "--porcelain", "--untracked-files=no")
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard")
    return {
        "commit": head.strip(),
        "dirty": UNKNOWN if tracked is None else bool(tracked.strip()),
        "untracked_files": (
            UNKNOWN if untracked is None else len(untracked.splitlines())
        ),
    }


@functools.lru_cache(maxsize=1)
def suite_code_state() -> dict[str, Any]:
    """:func:`code_state` of the checkout this ``pflcore`` was imported from."""
    return code_state(Path(__file__).resolve().parents[2])


def portable_text(text: str, root: str | Path | None) -> str:
    """``text`` (one override) with absolute paths made machine-independent.

    The data root becomes ``<data root>``; any other absolute path becomes
    ``<local path>``.
    """
    key, sep, value = text.partition("=")
    if not sep:
        return text
    return f"{key}={portable_value(value, root)}"


def portable_value(value: str, root: str | Path | None) -> str:
    """A path-valued string made machine-independent (see :func:`portable_text`)."""
    if not (value.startswith(("/", "~")) or (len(value) > 2 and value[1] == ":")):
        return value
    if root is not None:
        base = Path(root).expanduser().resolve()
        try:
            relative = Path(value).expanduser().resolve().relative_to(base)
        except (ValueError, OSError):
            pass
        else:
            text = relative.as_posix()
            return DATA_ROOT if text == "." else f"{DATA_ROOT}/{text}"
    return LOCAL_PATH


# An absolute POSIX path under a top-level folder where a machine keeps
# homes, work or scratch space; or a home-relative one.
ABSOLUTE = re.compile(
    r"(?<![\w.<>])(?:~/|/(?:work|root|home|tmp|Users|mnt|media|opt|srv|var|scratch"
    r"|data|private|usr|nfs|gpfs|lustre|cluster|shared)(?=/|\b))[^\s\"',;)\]]*"
)


def portable_string(text: str, root: str | Path | None) -> str:
    """``text`` with every absolute path in it made machine-independent."""
    return ABSOLUTE.sub(lambda match: portable_value(match.group(0), root), text)


def portable_json(node: Any, root: str | Path | None) -> Any:
    """A JSON value (a summary) with every absolute path rewritten."""
    if isinstance(node, dict):
        return {key: portable_json(value, root) for key, value in node.items()}
    if isinstance(node, list):
        return [portable_json(value, root) for value in node]
    if isinstance(node, str):
        if node.startswith(("/", "~")):
            return portable_value(node, root)
        return portable_string(node, root)
    return node


def hydra_overrides() -> list[str] | None:
    """The task overrides of the Hydra job running here; None outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(item) for item in HydraConfig.get().overrides.task]
    except (ImportError, ValueError, AttributeError):
        return None


def main_module() -> str | None:
    """The module run with ``python -m`` (e.g. ``fedper.main``), if any."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None)


def command(root: str | Path | None) -> dict[str, Any]:
    """The command line that reruns this run alone, from Hydra's overrides."""
    overrides = hydra_overrides()
    if overrides is None:
        return {"overrides": UNKNOWN, "note": "not started by a Hydra job here"}
    portable = [portable_text(item, root) for item in overrides]
    module = main_module()
    line = " ".join(
        ["python", "-m", module, *portable] if module else ["<entry point>", *portable]
    )
    return {"overrides": portable, "line": line}


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """The ``provenance`` entry of a run's ``summary.json``.

    Parameters
    ----------
    config : dict
        The run's resolved configuration (its ``dataset.root`` names the
        data root that data files are named relative to).
    """
    dataset = config.get("dataset")
    root = dataset.get("root") if isinstance(dataset, dict) else None
    return {
        "recorded": "by the run",
        "code": suite_code_state(),
        "data_files": data_files(root),
        "command": command(root),
    }
