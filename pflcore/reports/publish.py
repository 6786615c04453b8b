"""Render every published table, or check that what is published is current.

``python -m pflcore.reports.publish`` reads the table list
(``_static/tables.toml``), recomputes every table from the run folders
under ``_static/runs/`` and writes ``_static/<table>.md`` and ``.csv`` and
the marked blocks (``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->``) of
the documents the list names.

``python -m pflcore.reports.publish --check`` writes nothing. It fails
(exit 1), one line per problem, naming the table and the cell, when a
published table differs from its recomputation; and it fails when a
committed run folder lacks a record file or names an absolute path, or a
document's marker names no table.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from pflcore.reports.markers import MarkerError, blocks, fill, first_difference
from pflcore.reports.portable import absolute_paths
from pflcore.reports.render import GENERATED, Rendered, render
from pflcore.reports.runs import RecordError
from pflcore.reports.spec import Catalog, SpecError, load

DEFAULT_SPEC = "_static/tables.toml"
REQUIRED_RECORDS = ("rounds.csv", "clients.csv", "partition.csv", "summary.json")


@dataclass(frozen=True)
class Output:
    """One file the command writes, and its text."""

    path: Path
    text: str
    table: str | None  # the table it holds alone, if any


def static_text(rendered: Rendered) -> str:
    """``_static/<table>.md``: the block under a do-not-edit line."""
    return f"{GENERATED}\n\n{rendered.markdown}"


def render_all(catalog: Catalog, root: Path) -> tuple[dict[str, Rendered], list[str]]:
    """Every table rendered from the records now, and the tables that could not be."""
    runs = root / catalog.runs
    rendered, problems = {}, []
    for table in catalog.tables:
        try:
            rendered[table.name] = render(table, runs)
        except RecordError as exc:
            problems.append(f"table {table.name}: {exc}")
    return rendered, problems


def outputs(
    catalog: Catalog, root: Path, rendered: dict[str, Rendered]
) -> list[Output]:
    """Everything the catalog publishes, from the rendered tables.

    A document block of a table that could not be rendered is left as it is.

    Raises
    ------
    MarkerError
        If a document's markers are wrong.
    """
    out = root / catalog.out
    files = []
    for name, table in rendered.items():
        files.append(Output(out / f"{name}.md", static_text(table), name))
        files.append(Output(out / f"{name}.csv", table.csv, name))
    names = {table.name for table in catalog.tables}
    for document in catalog.documents:
        path = root / document
        text = path.read_text()
        kept = {
            name: block.removeprefix("\n")
            for name, block in blocks(text, document).items()
            if name in names and name not in rendered
        }
        blocks_text = {name: table.markdown for name, table in rendered.items()}
        files.append(Output(path, fill(text, {**kept, **blocks_text}, document), None))
    return files


def record_problems(runs: Path) -> list[str]:
    """Missing record files and absolute paths in the committed run folders."""
    problems = []
    for summary in sorted(runs.rglob("summary.json")):
        folder = summary.parent
        missing = [name for name in REQUIRED_RECORDS if not (folder / name).is_file()]
        if missing:
            name = folder.relative_to(runs).as_posix()
            problems.append(f"run {name}: missing {', '.join(missing)}")
    problems += [
        f"absolute path in committed records: {line}" for line in absolute_paths(runs)
    ]
    return problems


def differences(current: Output, root: Path) -> list[str]:
    """How the file on disk differs from ``current``, naming table and cell."""
    shown = current.path.relative_to(root).as_posix()
    if not current.path.is_file():
        return [f"{shown}: missing (run `python -m pflcore.reports.publish`)"]
    on_disk = current.path.read_text()
    if on_disk == current.text:
        return []
    if current.table is not None:
        where = first_difference(current.text, on_disk)
        return [f"table {current.table} ({shown}): {where}"]
    problems = []
    want, have = blocks(current.text, shown), blocks(on_disk, shown)
    for name, text in want.items():
        where = first_difference(text, have.get(name, ""))
        if where is not None:
            problems.append(f"table {name} in {shown}: {where}")
    return problems or [f"{shown}: differs outside its tables"]


def check(catalog: Catalog, root: Path) -> list[str]:
    """Every problem with what is published (empty: all current)."""
    problems = record_problems(root / catalog.runs)
    rendered, failed = render_all(catalog, root)
    problems += failed
    for output in outputs(catalog, root, rendered):
        problems += differences(output, root)
    return problems


def write(catalog: Catalog, root: Path) -> list[Path]:
    """Write every published table; the files that changed.

    Raises
    ------
    RecordError
        If a table cannot be computed from its records (nothing is written).
    """
    rendered, failed = render_all(catalog, root)
    if failed:
        raise RecordError("; ".join(failed))
    changed = []
    for output in outputs(catalog, root, rendered):
        if not output.path.is_file() or output.path.read_text() != output.text:
            output.path.write_text(output.text)
            changed.append(output.path)
    return changed


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="recompute and compare; write nothing"
    )
    parser.add_argument(
        "--root", type=Path, default=Path("."), help="repository root (.)"
    )
    parser.add_argument(
        "--spec",
        default=DEFAULT_SPEC,
        help=f"table list under the root ({DEFAULT_SPEC})",
    )
    args = parser.parse_args(argv)
    root = args.root
    try:
        catalog = load(root / args.spec)
        if args.check:
            problems = check(catalog, root)
            for line in problems:
                print(f"error: {line}")
            if problems:
                parser.exit(1)
            print(f"ok: {len(catalog.tables)} tables match their records")
            return
        changed = write(catalog, root)
    except (SpecError, RecordError, MarkerError, OSError) as exc:
        parser.exit(2, f"error: {exc}\n")
    for path in changed:
        print(f"wrote {path.relative_to(root).as_posix()}")
    print(f"{len(catalog.tables)} tables current ({len(changed)} files changed)")


if __name__ == "__main__":
    main()
