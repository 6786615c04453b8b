"""Committed records name no machine's absolute paths.

:func:`portable_json` rewrites a summary: a path below the data root becomes
``<data root>/...`` (the root itself ``<data root>``), any other absolute
path ``<local path>``, also inside longer strings (an error message).
:func:`absolute_paths` finds what is left, for the results check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pflcore.records.provenance import ABSOLUTE, portable_json, portable_string

__all__ = ["ABSOLUTE", "absolute_paths", "portable_json", "portable_string"]


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
