"""Committed records name no machine's absolute paths.

:func:`portable_json` rewrites a summary: a path below the data root becomes
``<data root>/...`` (the root itself ``<data root>``), any other absolute
path ``<local path>``, also inside longer strings (an error message).
:func:`absolute_paths` finds what is left, for the results check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pflcore.provenance import portable_value

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
        return portable_string(node, root)
    return node


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def absolute_paths(folder: Path) -> list[str]:
    """Every absolute path in the record files below ``folder``, as one line each.

    ``summary.json`` is searched value by value (the line names the key),
    every other text file line by line.
    """
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if path.name == "summary.json":
            data = json.loads(path.read_text())
            for key, text in _strings(data, ""):
                if ABSOLUTE.search(text) or text.startswith("/"):
                    found.append(f"{name}: {key} = {text!r}")
            continue
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(lines, start=1):
            match = ABSOLUTE.search(line)
            if match:
                found.append(f"{name}:{number}: {match.group(0)!r}")
    return found
