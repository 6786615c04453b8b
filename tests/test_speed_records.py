"""docs/SPEED.md's before/after rerun table, recomputed from its committed runs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RERUN = ROOT / "bench" / "results" / "speed_before_after_redesign_rerun.json"


def _cell(values: list[float], digits: int, unit: str = "") -> str:
    median = f"{statistics.median(values):.{digits}f}{unit}"
    low, high = min(values), max(values)
    if digits == 0:
        return f"{median} ({low:.0f}-{high:.0f})"
    return f"{median} ({low:.{digits}f}-{high:.{digits}f})"


def test_the_rerun_table_follows_its_runs():
    runs = json.loads(RERUN.read_text())["runs"]
    assert len(runs["before"]) == len(runs["after"]) == 4
    doc = (ROOT / "docs" / "SPEED.md").read_text()
    rows = {
        "simulation / plain loop": ("sim_over_plain", 2, ""),
        "Flower's part of a round": ("flower_ms", 1, " ms"),
        "the client's own compute in the simulation": ("client_ms", 0, " ms"),
    }
    for label, (key, digits, unit) in rows.items():
        cells = [
            _cell([r[key] for r in runs[side]], digits, unit)
            for side in ("before", "after")
        ]
        row = f"| pFedHN CIFAR-10, {label} | {cells[0]} | {cells[1]} |"
        assert row in doc, row
