"""Jiang et al.'s results table, shaped like the FedLab seed's, beside the paper's.

``python -m perfedavg.jiang FOLDER [FOLDER ...] [--out table.md] [--command TEXT]
[--paper K/E=TEXT ...]`` reads the ``summary.json`` of every finished Jiang run
below the folders and writes one row per run: clients per round (K), local
epochs (E), Reptile rounds, the paper's initial -> personalized accuracy for that
K and E, our initial and personalized loss and accuracy (mean over the held-out
clients, std in brackets), the stage-1/2 round at which the initial accuracy
first reached 0.8, seed, wall time and the command. Rows without a Reptile
stage get no paper number: the paper's pipeline always has one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pflcore.tables import Row, parse_paper, to_markdown, write_tables

COLUMNS = (
    "clients per round",
    "E",
    "Reptile rounds",
    "paper: initial -> personalized",
    "initial loss",
    "initial acc (std)",
    "personalized loss",
    "personalized acc (std)",
    "rounds to 0.8 (initial)",
    "seed",
    "wall s",
    "command",
)


class NoJiangRunsError(LookupError):
    """No finished Jiang run below the given folders."""


def _percent(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} % ({100 * std:.1f})"


def row_of(summary: dict[str, Any], paper: dict[str, str], command: str) -> Row:
    """One table row from a finished run's ``summary.json``."""
    config, personal = summary["config"], summary["personalization"]
    k, epochs = config["clients_per_round"], config["local_epochs"]
    reptile = config["jiang"]["reptile"]["rounds"]
    reached = personal["rounds_to_0.8_initial"]
    return Row(
        {
            "clients per round": str(k),
            "E": str(epochs),
            "Reptile rounds": str(reptile),
            "paper: initial -> personalized": (
                paper.get(f"{k}/{epochs}", "-") if reptile > 0 else "-"
            ),
            "initial loss": f"{personal['initial_loss']:.4f}",
            "initial acc (std)": _percent(
                personal["initial_acc"], personal["initial_acc_std"]
            ),
            "personalized loss": f"{personal['personalized_loss']:.4f}",
            "personalized acc (std)": _percent(
                personal["personalized_acc"], personal["personalized_acc_std"]
            ),
            "rounds to 0.8 (initial)": str(reached or "not reached"),
            "seed": str(config["seed"]),
            "wall s": f"{summary['wall_time_s']:.0f}",
            "command": command,
        }
    )


def find_rows(folders: list[str], paper: dict[str, str], command: str) -> list[Row]:
    """A row per finished Jiang run below ``folders``, in path order.

    Raises
    ------
    NoJiangRunsError
        If no ``summary.json`` below the folders has a personalization record.
    """
    rows = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("summary.json")):
            summary = json.loads(path.read_text())
            if summary.get("personalization"):
                rows.append(row_of(summary, paper, command))
    if not rows:
        raise NoJiangRunsError(
            "no run results (summary.json with a personalization record) under "
            + ", ".join(folders)
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: print the table, or write Markdown + CSV with ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="run or multirun folders")
    parser.add_argument("--out", help="Markdown file (CSV beside it); else stdout")
    parser.add_argument("--command", default="", help="command that made the runs")
    parser.add_argument(
        "--paper", action="append", default=[], help="K/E=TEXT, repeatable"
    )
    args = parser.parse_args(argv)
    try:
        rows = find_rows(args.folders, parse_paper(args.paper), args.command)
    except (NoJiangRunsError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.out:
        md_path, csv_path = write_tables(rows, args.out, COLUMNS)
        print(f"wrote {md_path} and {csv_path}")
    else:
        sys.stdout.write(to_markdown(rows, COLUMNS))


if __name__ == "__main__":
    main()
