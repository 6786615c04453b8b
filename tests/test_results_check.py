"""The results check CI runs (fast tier): every published table equals its records.

Every table in ``_static/tables.toml`` is recomputed from the committed run
folders under ``_static/runs/`` and compared with ``_static/<table>.md|csv``
and with the marked blocks of the README files; a committed record naming an
absolute path, or lacking a record file, fails it too. On a failure, run
``python -m pflcore.reports.publish --check`` for the list, and
``python -m pflcore.reports.publish`` to regenerate after a deliberate change.
"""

from __future__ import annotations

from pathlib import Path

from pflcore.reports import publish
from pflcore.reports.spec import load

ROOT = Path(__file__).resolve().parents[1]


def test_published_tables_match_the_committed_records():
    catalog = load(ROOT / publish.DEFAULT_SPEC)
    problems = publish.check(catalog, ROOT)
    assert problems == [], "\n".join(problems)


def test_the_shared_protocol_declarations_follow_the_committed_records():
    from bench.shared_protocol import load as load_protocol
    from bench.shared_tables import (
        BENCHMARK_DOC,
        TABLES,
        TUNING_DOC,
        declarations,
        names,
        tuning_tables,
        with_run_time,
    )
    from pflcore.reports.markers import blocks

    spec = load_protocol()
    text = TABLES.read_text()
    assert declarations(spec, ROOT / "_static" / "runs", text) == text, (
        "run python -m bench.shared_tables"
    )
    doc = BENCHMARK_DOC.read_text()
    assert with_run_time(doc, spec) == doc, "run python -m bench.shared_tables"
    shown = list(blocks(TUNING_DOC.read_text(), str(TUNING_DOC)))
    assert shown == names(tuning_tables(spec))
