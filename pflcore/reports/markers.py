"""Generated blocks inside hand-written documents.

A document holds a table between the lines ``<!-- table:NAME -->`` and
``<!-- /table:NAME -->``; :func:`fill` replaces what lies between with the
rendered table, :func:`blocks` reads what is there now, and
:func:`first_difference` names the table row and column (or line) where a
block differs from its regenerated text.
"""

from __future__ import annotations

import re

# A marker is a line of its own, so prose may quote the syntax.
OPEN = re.compile(r"^<!-- table:([\w.-]+) -->$", re.MULTILINE)


class MarkerError(ValueError):
    """A document's markers are malformed (unclosed, nested, repeated)."""


def _close(name: str) -> str:
    return f"<!-- /table:{name} -->"


def blocks(text: str, where: str) -> dict[str, str]:
    """The generated blocks of a document: table name -> text between markers.

    Raises
    ------
    MarkerError
        If a block is not closed, or a table appears twice in one document.
    """
    found: dict[str, str] = {}
    for match in OPEN.finditer(text):
        name = match.group(1)
        end = text.find(_close(name), match.end())
        if end < 0:
            raise MarkerError(f"{where}: <!-- table:{name} --> is never closed")
        if name in found:
            raise MarkerError(f"{where}: table {name} appears twice")
        found[name] = text[match.end() : end]
    return found


def fill(text: str, rendered: dict[str, str], where: str) -> str:
    """``text`` with every marked block replaced by its rendered table.

    Raises
    ------
    MarkerError
        If a block names a table that was not rendered.
    """
    for name in blocks(text, where):
        if name not in rendered:
            raise MarkerError(f"{where}: <!-- table:{name} --> names no table")
        start_tag = f"<!-- table:{name} -->"
        start = text.index(start_tag) + len(start_tag)
        end = text.index(_close(name), start)
        text = text[:start] + "\n" + rendered[name] + text[end:]
    return text


def _cells(line: str) -> list[str]:
    inner = line.strip().strip("|")
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", inner)]


def first_difference(expected: str, actual: str) -> str | None:
    """Where ``actual`` departs from ``expected``: table row and column, or line.

    Returns
    -------
    str or None
        None when they are equal.
    """
    if expected == actual:
        return None
    want, have = expected.splitlines(), actual.splitlines()
    header: list[str] = []
    for number, (a, b) in enumerate(zip(want, have, strict=False), start=1):
        if a.startswith("|") and not a.startswith("|---"):
            cells_a = _cells(a)
            if not header:
                header = cells_a
        if a == b:
            continue
        if a.startswith("|") and b.startswith("|") and header:
            cells_a, cells_b = _cells(a), _cells(b)
            for i, (x, y) in enumerate(zip(cells_a, cells_b, strict=False)):
                if x != y:
                    column = header[i] if i < len(header) else f"column {i + 1}"
                    return (
                        f"row {cells_a[0]!r}, column {column!r}: "
                        f"expected {x!r}, found {y!r}"
                    )
            return (
                f"row {cells_a[0]!r}: expected {len(cells_a)} cells, "
                f"found {len(cells_b)}"
            )
        return f"line {number}: expected {a!r}, found {b!r}"
    return f"expected {len(want)} lines, found {len(have)}"
