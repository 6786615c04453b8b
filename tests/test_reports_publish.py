"""``python -m pflcore.reports.publish``: writing tables, and the check catching
each kind of drift, on a small repository written here (the repository's own
check is ``tests/test_results_check.py``)."""

from __future__ import annotations

import json

import pytest
from fakeruns import write_run

from pflcore.reports import publish
from pflcore.reports.markers import MarkerError
from pflcore.reports.spec import load

SPEC = """
[settings]
runs = "runs"
out = "static"
documents = ["README.md"]

[[table]]
name = "demo"
title = "Demo"
command = "python -m demo"
reference = "Local"

[[table.row]]
label = "Local"
runs = "local"

[[table.row]]
label = "Method"
runs = "method"
"""

README = """# Demo

Intro.

<!-- table:demo -->
(to be generated)
<!-- /table:demo -->

The end.
"""


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "static").mkdir()
    (tmp_path / "spec.toml").write_text(SPEC)
    (tmp_path / "README.md").write_text(README)
    write_run(tmp_path / "runs" / "local", seed=0, correct=[3, 2, 4], samples=[4] * 3)
    write_run(tmp_path / "runs" / "method", seed=0, correct=[4, 3, 4], samples=[4] * 3)
    catalog = load(tmp_path / "spec.toml")
    publish.write(catalog, tmp_path)
    return tmp_path, catalog


def test_publish_fills_the_readme_and_static_files(repo):
    root, catalog = repo
    readme = (root / "README.md").read_text()
    assert "(to be generated)" not in readme
    assert "| Method | 91.67 ± 14.43 (clients) |" in readme
    assert readme.startswith("# Demo\n\nIntro.") and readme.endswith("The end.\n")
    assert (root / "static" / "demo.md").read_text().startswith("<!-- generated")
    assert publish.check(catalog, root) == []
    assert publish.write(catalog, root) == []  # nothing changes the second time


def test_a_drifted_readme_cell_is_named(repo):
    root, catalog = repo
    path = root / "README.md"
    path.write_text(path.read_text().replace("91.67 ± 14.43", "92.67 ± 14.43"))
    (problem,) = publish.check(catalog, root)
    assert problem.startswith("table demo in README.md: row 'Method', column 'ours'")
    assert "expected '91.67 ± 14.43 (clients)'" in problem


def test_a_changed_record_is_caught(repo):
    root, catalog = repo
    clients = root / "runs" / "method" / "clients.csv"
    clients.write_text(clients.read_text().replace("5,1,0.75,", "5,1,0.5,"))
    problems = publish.check(catalog, root)
    assert any(
        p.startswith("table demo (static/demo.md): row 'Method'") for p in problems
    )
    assert any(p.startswith("table demo in README.md") for p in problems)


def test_absolute_paths_and_missing_records_fail_the_check(repo):
    root, catalog = repo
    summary = root / "runs" / "local" / "summary.json"
    data = json.loads(summary.read_text())
    data["config"]["dataset"] = {"root": "/home/someone/data"}
    summary.write_text(json.dumps(data))
    (root / "runs" / "method" / "partition.csv").unlink()
    problems = publish.check(catalog, root)
    joined = "\n".join(problems)
    assert "absolute path in committed records: local/summary.json: " in joined
    assert "config.dataset.root = '/home/someone/data'" in joined
    assert "run method: missing partition.csv" in joined


def test_a_marker_naming_no_table_is_an_error(repo):
    root, catalog = repo
    readme = root / "README.md"
    readme.write_text(
        readme.read_text() + "<!-- table:nope -->\n<!-- /table:nope -->\n"
    )
    with pytest.raises(MarkerError, match="names no table"):
        publish.check(catalog, root)
