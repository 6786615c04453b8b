"""Jiang et al.'s results table, shaped like the paper's, beside the paper's numbers.

``python -m perfedavg.jiang FOLDER [FOLDER ...] [--out table.md] [--command TEXT]
[--paper K/E=TEXT ...]`` reads the ``summary.json`` of every finished Jiang run
below the folders and writes one row per cell (clients per round K, local
epochs E, Reptile rounds and optimizer), seeds pooled: the paper's initial ->
personalized accuracy for that K and E, our initial and personalized loss and
accuracy (mean over seeds of the held-out clients' mean, std over seeds in
brackets; with one seed, the std across clients), the round at which the
initial accuracy first reached 0.8, the seeds, wall time and the command.

The paper's Table 1 reports FedAvg alone (its rows are "FedAvg E = 2 ... 20";
initial = the FedAvg model, personalized = after local fine-tuning of it), so
its numbers stand beside runs with no Reptile stage only; runs with a Reptile
stage are this suite's extension and get no paper number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pflcore.reports.tables import (
    Row,
    averaging_of,
    parse_paper,
    to_markdown,
    write_tables,
)

COLUMNS = (
    "clients per round",
    "E",
    "pipeline",
    "paper: initial -> personalized",
    "initial loss",
    "initial acc",
    "personalized loss",
    "personalized acc",
    "rounds to 0.8 (initial)",
    "seeds",
    "averaging",
    "wall s",
    "command",
)


class NoJiangRunsError(LookupError):
    """No finished Jiang run below the given folders."""


@dataclass(frozen=True, order=True)
class Cell:
    """What a row holds fixed: everything but the seed that the table shows.

    Ordered as the rows are: by clients per round, E, Reptile rounds, optimizer.
    """

    clients_per_round: int
    local_epochs: int
    reptile_rounds: int
    optimizer: str

    @classmethod
    def of(cls, config: dict[str, Any]) -> Cell:
        """The cell of a run from the config its ``summary.json`` recorded.

        The one place the table reads a recorded config (a plain dict: older
        runs may lack keys that the settings now have, e.g. the optimizer).
        """
        reptile = config["jiang"]["reptile"]
        return cls(
            config["clients_per_round"],
            config["local_epochs"],
            int(reptile["rounds"]),
            reptile.get("optimizer", "client_adam"),
        )

    @property
    def pipeline(self) -> str:
        """``FedAvg`` alone, or ``FedAvg + Reptile`` with its rounds and optimizer."""
        if self.reptile_rounds == 0:
            return "FedAvg (paper's Table 1)"
        optimizer = self.optimizer.replace("_", " ")
        return f"FedAvg + {self.reptile_rounds} Reptile rounds, {optimizer} (extension)"


def _accuracy(summaries: list[dict[str, Any]], key: str) -> str:
    values = [s["personalization"][key] for s in summaries]
    if len(values) == 1:
        spread = summaries[0]["personalization"][f"{key}_std"]
        return f"{100 * values[0]:.2f} % ({100 * spread:.1f} across clients)"
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f} %"


def _mean_loss(personal: list[dict[str, Any]], key: str) -> str:
    return f"{statistics.fmean(p[key] for p in personal):.4f}"


def row_of(
    cell: Cell, summaries: list[dict[str, Any]], paper: dict[str, str], command: str
) -> Row:
    """One table row from the ``summary.json`` of a cell's finished runs."""
    k, epochs = cell.clients_per_round, cell.local_epochs
    fedavg_only = cell.reptile_rounds == 0
    reached = [s["personalization"]["rounds_to_0.8_initial"] for s in summaries]
    personal = [s["personalization"] for s in summaries]
    return Row(
        {
            "clients per round": str(k),
            "E": str(epochs),
            "pipeline": cell.pipeline,
            "paper: initial -> personalized": (
                paper.get(f"{k}/{epochs}", "-") if fedavg_only else "-"
            ),
            "initial loss": _mean_loss(personal, "initial_loss"),
            "initial acc": _accuracy(summaries, "initial_acc"),
            "personalized loss": _mean_loss(personal, "personalized_loss"),
            "personalized acc": _accuracy(summaries, "personalized_acc"),
            "rounds to 0.8 (initial)": ", ".join(
                str(r or "not reached") for r in reached
            ),
            "seeds": ", ".join(str(s["config"]["seed"]) for s in summaries),
            "averaging": "/".join(sorted({averaging_of(s) for s in summaries})),
            "wall s": f"{statistics.median(s['wall_time_s'] for s in summaries):.0f}",
            "command": command,
        }
    )


def find_rows(folders: list[str], paper: dict[str, str], command: str) -> list[Row]:
    """A row per cell of finished Jiang runs below ``folders`` (seeds pooled).

    Raises
    ------
    NoJiangRunsError
        If no ``summary.json`` below the folders has a personalization record.
    """
    cells: dict[Cell, list[dict[str, Any]]] = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("summary.json")):
            summary = json.loads(path.read_text())
            if summary.get("personalization"):
                cells.setdefault(Cell.of(summary["config"]), []).append(summary)
    if not cells:
        raise NoJiangRunsError(
            "no run results (summary.json with a personalization record) under "
            + ", ".join(folders)
        )
    return [row_of(cell, cells[cell], paper, command) for cell in sorted(cells)]


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
