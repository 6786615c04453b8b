"""Result tables from run folders: paper number beside ours, with the command.

``python -m pflcore.reports.tables FOLDER [FOLDER ...] --out table.md --metric KEY
--command TEXT [--setting TEXT] [--paper LABEL=TEXT ...]`` finds every run below
the folders (as :mod:`pflcore.reports.plots` does), groups them by the config keys that
differ between runs (seeds pooled), reads ``KEY`` (a dotted path into
``summary.json``, e.g. ``final.test_acc_mean``) from each, and writes one row
per group as Markdown (``table.md``) and CSV (``table.csv``): setting, method,
paper number, ours (mean ± sample std, ddof = 1, over seeds, in percent),
seeds, rounds, the server's averaging rule, wall time and hardware, and the
command that produced the runs. These are a sweep's working tables; the
published ones come from :mod:`pflcore.reports.publish`.
``--extra PREFIX=LABEL`` adds, after each group whose runs recorded the extra
evaluation ``PREFIX`` (e.g. FedAvg + FT's ``before``: FedAvg's own global model
from the same training), a row ``LABEL`` read from that evaluation's key.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pflcore.records.results import effective_status
from pflcore.reports.plots import (
    NoResultsError,
    Run,
    find_runs,
    label_of,
    title_of,
    varying_keys,
)

COLUMNS = (
    "setting",
    "method",
    "paper",
    "ours",
    "seeds",
    "rounds",
    "averaging",
    "wall_time",
    "hardware",
    "command",
)


@dataclass(frozen=True)
class Row:
    """One table row: a group of runs that differ only in their seed."""

    values: dict[str, str]


def lookup(summary: dict[str, Any], key: str) -> float | None:
    """The number at dotted path ``key`` in ``summary`` (None if absent or null)."""
    node: Any = summary
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None:
        return None
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise ValueError(f"summary value at '{key}' is not a number: {node!r}")
    return float(node)


def _summary(run: Run) -> dict[str, Any]:
    return json.loads((run.folder / "summary.json").read_text())


def _percent(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return (
        f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"
    )


def _minutes(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) / 60:.1f} min"


def averaging_of(summary: dict[str, Any]) -> str:
    """The server averaging rule a run used, from its summary or its config."""
    rule = summary.get("averaging") or summary.get("config", {}).get("averaging")
    return str(rule) if rule else "unrecorded"


def paper_for(label: str, algorithm: str, paper: dict[str, str]) -> str:
    """The paper number given for a row's label, else for its algorithm, else '-'."""
    return paper.get(label) or paper.get(algorithm) or "-"


def extra_metric(metric: str, prefix: str) -> str:
    """The key of extra evaluation ``prefix`` beside ``metric``.

    ``final.test_acc_mean`` with prefix ``before`` is ``final.before_acc_mean``
    (the names :class:`pflcore.fl.strategy.PartitionStrategy` records).

    Raises
    ------
    ValueError
        If the metric's last part does not start with ``test_``.
    """
    head, _, last = metric.rpartition(".")
    if not last.startswith("test_"):
        raise ValueError(
            f"--extra needs a --metric whose last part starts with 'test_', "
            f"got {metric!r}"
        )
    name = f"{prefix}_{last.removeprefix('test_')}"
    return f"{head}.{name}" if head else name


def build_rows(
    runs: list[Run],
    metric: str,
    setting: str,
    command: str,
    paper: dict[str, str],
    hardware: str = "unrecorded",
    extras: dict[str, str] | None = None,
) -> list[Row]:
    """Group ``runs`` by label and summarise ``metric`` per group.

    Parameters
    ----------
    runs : list of Run
        Runs found by :func:`pflcore.reports.plots.find_runs`.
    metric : str
        Dotted path into ``summary.json`` of a fraction in [0, 1].
    setting : str
        The setting column's text.
    command : str
        The command that produced the runs.
    paper : dict
        Published number per label or per algorithm name.
    hardware : str
        Shown for runs whose ``summary.json`` predates the ``hardware`` entry.
    extras : dict, optional
        Extra evaluation prefix -> row label (see :func:`extra_metric`). The
        row follows its group's and is labelled ``label`` when one group
        recorded the evaluation, ``"<group>: <label>"`` when several did.

    Returns
    -------
    list of Row
        One row per group, in first-seen order. A group none of whose runs
        recorded the metric shows ``not recorded``; runs that did not complete
        are counted and marked, never silently mixed in.
    """
    keys = varying_keys(runs)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(label_of(run, keys), []).append(run)
    extras = extras or {}
    summaries = {
        label: [_summary(r) for r in members] for label, members in groups.items()
    }
    extra_keys = {p: extra_metric(metric, p) for p in extras}
    with_extra = {
        p: [
            label
            for label, group in summaries.items()
            if any(lookup(s, key) is not None for s in group)
        ]
        for p, key in extra_keys.items()
    }
    rows = []
    for label, members in groups.items():
        common = (summaries[label], setting, command, paper, hardware)
        algorithm = str(members[0].config.get("algorithm", ""))
        rows.append(_row(label, metric, *common, algorithm))
        for prefix, key in extra_keys.items():
            if label in with_extra[prefix]:
                name = extras[prefix]
                if len(with_extra[prefix]) > 1:
                    name = f"{label}: {name}"
                # the paper number of the group's algorithm is not this row's
                rows.append(_row(name, key, *common, algorithm=""))
    return rows


def _row(
    label: str,
    metric: str,
    summaries: list[dict[str, Any]],
    setting: str,
    command: str,
    paper: dict[str, str],
    hardware: str,
    algorithm: str,
) -> Row:
    """The row of one group of runs (their summaries) that differ only in their seed.

    ``algorithm`` is the name the paper number may also be given under.
    """
    values = [v for s in summaries if (v := lookup(s, metric)) is not None]
    statuses = [effective_status(s) for s in summaries]
    unfinished = sum(status != "completed" for status in statuses)
    ours = _percent(values) if values else "not recorded"
    if unfinished:
        kinds = ", ".join(sorted({st for st in statuses if st != "completed"}))
        ours += f" ({unfinished} of {len(summaries)} runs unfinished: {kinds})"
    rounds = sorted({int(s.get("rounds_completed", 0)) for s in summaries})
    machines = sorted({str(s.get("hardware", hardware)) for s in summaries})
    rules = sorted({averaging_of(s) for s in summaries})
    return Row(
        {
            "setting": setting,
            "method": label,
            "paper": paper_for(label, algorithm, paper),
            "ours": ours,
            "seeds": ", ".join(
                str(s.get("seed", "?")) for s in summaries if "seed" in s
            ),
            "rounds": "/".join(str(r) for r in rounds),
            "averaging": "/".join(rules),
            "wall_time": _minutes(
                [float(s.get("wall_time_s", 0.0)) for s in summaries]
            ),
            "hardware": "; ".join(machines),
            "command": command,
        }
    )


def to_markdown(rows: list[Row], columns: tuple[str, ...] = COLUMNS) -> str:
    """``rows`` as one Markdown table; the last column (the command) set as code."""
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [row.values[c].replace("|", "\\|") for c in columns]
        cells[-1] = f"`{cells[-1]}`" if cells[-1] else ""
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


OURS_NOTE = (
    "\nours: mean ± sample std (ddof = 1) over the seeds listed, in percent "
    "(one seed: its value). A working table of a sweep; the published tables "
    "are written by `python -m pflcore.reports.publish`.\n"
)


def write_tables(
    rows: list[Row],
    out: str | Path,
    columns: tuple[str, ...] = COLUMNS,
    note: str = "",
) -> tuple[Path, Path]:
    """Write ``rows`` as Markdown at ``out`` and as CSV beside it.

    ``columns`` names the entries of each row's ``values``, in order;
    ``note`` follows the Markdown table (what its numbers are).
    """
    md_path = Path(out).with_suffix(".md")
    csv_path = md_path.with_suffix(".csv")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(to_markdown(rows, columns) + note)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(row.values for row in rows)
    return md_path, csv_path


def parse_pairs(items: list[str], option: str, form: str) -> dict[str, str]:
    """``["KEY=TEXT", ...]`` as a dict; a ValueError names a malformed item."""
    pairs = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} expects {form}, got {item!r}")
        pairs[key] = text
    return pairs


def parse_paper(items: list[str]) -> dict[str, str]:
    """``["LABEL=TEXT", ...]`` as a dict; a ValueError names a malformed item."""
    return parse_pairs(items, "--paper", "LABEL=TEXT")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m pflcore.reports.tables FOLDER ... --out T.md ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="run or multirun folders")
    parser.add_argument("--out", required=True, help="Markdown file (CSV beside it)")
    parser.add_argument("--metric", required=True, help="dotted key in summary.json")
    parser.add_argument(
        "--setting",
        default=None,
        help="setting column text (default: dataset, partition, clients, model)",
    )
    parser.add_argument("--command", required=True, help="command that made the runs")
    parser.add_argument(
        "--paper", action="append", default=[], help="LABEL=TEXT, repeatable"
    )
    parser.add_argument(
        "--hardware",
        default="unrecorded",
        help="for runs whose summary.json does not record it",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="PREFIX=LABEL: also a row from the extra evaluation PREFIX "
        "(e.g. before=fedavg for FedAvg + FT's global model), repeatable",
    )
    args = parser.parse_args(argv)
    try:
        paper = parse_paper(args.paper)
        extras = parse_pairs(args.extra, "--extra", "PREFIX=LABEL")
        if not all(extras.values()):
            raise ValueError("--extra expects PREFIX=LABEL with a non-empty LABEL")
        runs = find_runs(args.folders)
        setting = args.setting or title_of(runs)
        rows = build_rows(
            runs, args.metric, setting, args.command, paper, args.hardware, extras
        )
    except (NoResultsError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    md_path, csv_path = write_tables(rows, args.out, note=OURS_NOTE)
    print(f"wrote {md_path} and {csv_path}")


if __name__ == "__main__":
    main()
