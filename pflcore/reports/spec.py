"""The declarative list of published tables (``_static/tables.toml``).

The file's own header documents its format; this module reads it into typed
objects and refuses, in one line naming the table and key, anything it does
not know: an unknown key, a reference to a row that does not exist, a
round or statistic outside the allowed ones.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pflcore.reports.runs import ROUNDS, STATISTICS

KINDS = ("methods", "clients")
NO_REFERENCE = "none"


class SpecError(ValueError):
    """The table list is malformed."""


@dataclass(frozen=True)
class PaperNumber:
    """A published number beside ours, in percent.

    Attributes
    ----------
    value : float
        The number.
    sd : float or None
        Its ± as published (None: the source gives none).
    source : str
        Where it is published (paper and table).
    via : str or None
        Whose copy of it we read, where it could not be traced to the paper
        itself (e.g. a third party's README).
    """

    value: float
    sd: float | None
    source: str
    via: str | None


@dataclass(frozen=True)
class RowSpec:
    """One row: a method's runs (one per seed)."""

    label: str
    runs: str
    column: str
    versus: str | None
    local: str | None
    round: str | None
    paper: PaperNumber | None


@dataclass(frozen=True)
class ClientField:
    """A per-client column read from a list of objects in ``summary.json``."""

    key: str
    field: str
    label: str
    digits: int


@dataclass(frozen=True)
class TableSpec:
    """One published table."""

    name: str
    title: str
    kind: str
    round: str
    statistic: str
    budget: tuple[str, ...]
    reference: str | None
    local: str | None
    command: str
    rows: tuple[RowSpec, ...]
    client_fields: tuple[ClientField, ...]
    chosen: str | None = None
    fairness: bool = False
    also_versus: str | None = None
    pooled: bool = False

    def row(self, label: str) -> RowSpec:
        """The row called ``label``."""
        for row in self.rows:
            if row.label == label:
                return row
        raise SpecError(f"table {self.name}: no row {label!r}")


@dataclass(frozen=True)
class Catalog:
    """Every published table and where they go."""

    runs: str
    out: str
    documents: tuple[str, ...]
    tables: tuple[TableSpec, ...]

    def table(self, name: str) -> TableSpec:
        """The table called ``name``."""
        for table in self.tables:
            if table.name == name:
                return table
        raise SpecError(f"no table {name!r} in the table list")


def _take(
    data: dict[str, Any], where: str, required: set[str], optional: set[str]
) -> dict[str, Any]:
    unknown = set(data) - required - optional
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
    missing = required - set(data)
    if missing:
        raise SpecError(f"{where}: missing keys {sorted(missing)}")
    return data


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise SpecError(f"{where}: {value!r} is not one of {allowed}")
    return value


def _paper(data: dict[str, Any], where: str) -> PaperNumber:
    _take(data, where, {"value", "source"}, {"sd", "via"})
    sd = data.get("sd")
    return PaperNumber(
        value=float(data["value"]),
        sd=None if sd is None else float(sd),
        source=str(data["source"]),
        via=None if data.get("via") is None else str(data["via"]),
    )


def _row(data: dict[str, Any], where: str) -> RowSpec:
    _take(
        data, where, {"label", "runs"}, {"column", "versus", "local", "round", "paper"}
    )
    paper = data.get("paper")
    rnd = data.get("round")
    return RowSpec(
        label=str(data["label"]),
        runs=str(data["runs"]),
        column=str(data.get("column", "accuracy")),
        versus=None if data.get("versus") is None else str(data["versus"]),
        local=None if data.get("local") is None else str(data["local"]),
        round=None if rnd is None else _one_of(str(rnd), ROUNDS, f"{where}.round"),
        paper=None if paper is None else _paper(paper, f"{where}.paper"),
    )


def _client_field(data: dict[str, Any], where: str) -> ClientField:
    _take(data, where, {"key", "field", "label"}, {"digits"})
    return ClientField(
        key=str(data["key"]),
        field=str(data["field"]),
        label=str(data["label"]),
        digits=int(data.get("digits", 3)),
    )


def _table(data: dict[str, Any]) -> TableSpec:
    where = f"table {data.get('name', '?')}"
    _take(
        data,
        where,
        {"name", "title", "row", "command"},
        {
            "kind",
            "round",
            "statistic",
            "budget",
            "reference",
            "local",
            "client_field",
            "chosen",
            "fairness",
            "also_versus",
            "pooled",
        },
    )
    rows = tuple(
        _row(row, f"{where}, row {i + 1}") for i, row in enumerate(data["row"])
    )
    labels = [row.label for row in rows]
    if len(set(labels)) != len(labels):
        raise SpecError(f"{where}: row labels repeat: {labels}")
    table = TableSpec(
        name=str(data["name"]),
        title=str(data["title"]),
        kind=_one_of(str(data.get("kind", "methods")), KINDS, f"{where}.kind"),
        round=_one_of(str(data.get("round", "last")), ROUNDS, f"{where}.round"),
        statistic=_one_of(
            str(data.get("statistic", "client_mean")), STATISTICS, f"{where}.statistic"
        ),
        budget=tuple(str(key) for key in data.get("budget", ())),
        reference=data.get("reference"),
        local=data.get("local"),
        command=str(data["command"]),
        rows=rows,
        client_fields=tuple(
            _client_field(item, f"{where}.client_field")
            for item in data.get("client_field", ())
        ),
        chosen=data.get("chosen"),
        fairness=bool(data.get("fairness", False)),
        also_versus=data.get("also_versus"),
        pooled=bool(data.get("pooled", False)),
    )
    named = [
        table.reference,
        table.also_versus,
        table.local,
        table.chosen,
        *(row.versus for row in rows),
        *(row.local for row in rows),
    ]
    for label in named:
        if label is not None and label != NO_REFERENCE and label not in labels:
            raise SpecError(f"{where}: {label!r} names no row (rows: {labels})")
    return table


def parse(data: dict[str, Any]) -> Catalog:
    """The catalog from the parsed TOML document."""
    _take(data, "table list", {"settings", "table"}, set())
    settings = _take(
        data["settings"], "[settings]", {"runs", "out", "documents"}, set()
    )
    tables = tuple(_table(table) for table in data["table"])
    names = [table.name for table in tables]
    if len(set(names)) != len(names):
        raise SpecError(f"table names repeat: {names}")
    return Catalog(
        runs=str(settings["runs"]),
        out=str(settings["out"]),
        documents=tuple(str(doc) for doc in settings["documents"]),
        tables=tables,
    )


def load(path: str | Path) -> Catalog:
    """Read and check the table list at ``path``.

    Raises
    ------
    SpecError
        If the file is not valid TOML or breaks the format.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from exc
    return parse(data)
