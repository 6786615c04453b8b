"""What a finished run or sweep achieved, in a few lines, with chance beside it.

After each run (Hydra job) one line gives the final mean client accuracy and
the chance level of the run's partition; after a ``--multirun`` sweep a small
table gives every run of the sweep, where its records are, and the figure of
the sweep, which it draws (``accuracy.png`` in the sweep folder). Both come
from :class:`SweepSummary`, a Hydra callback the packages' configs register
(``hydra.callbacks.summary``); they read only what the runs wrote to disk.

Chance level: a client that guesses uniformly among the classes of its own
training split is right, on its test split, with probability (share of its
test samples whose class it holds) / (number of classes it holds); that is
1/k for a client holding k classes whose test split has the same classes
(FedPer's and pFedHN's partitions). The summary shows this expected
accuracy, averaged over the clients of the final evaluation, as the mean
client accuracy is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback

CHANCE_NOTE = (
    "chance: a uniform guess among each client's own training classes, "
    "mean over the evaluated clients"
)


def chance_accuracy(
    partition: pd.DataFrame, clients: list[int] | None = None
) -> float | None:
    """Mean over clients of the accuracy of guessing among the client's own classes.

    Parameters
    ----------
    partition : pandas.DataFrame
        ``partition.csv``: ``partition_id``, ``split`` (``train``/``test``) and
        one count column per class (``c0``, ``c1``, ...).
    clients : list of int, optional
        The partition-ids to average over (default: every client with a
        test sample).

    Returns
    -------
    float or None
        The mean expected accuracy; ``None`` when no listed client has both
        a training class and a test sample.
    """
    classes = [c for c in partition.columns if c.startswith("c") and c[1:].isdigit()]
    per_client = []
    for pid, rows in partition.groupby("partition_id"):
        if clients is not None and int(str(pid)) not in clients:
            continue
        by_split = rows.set_index("split")[classes]
        if "train" not in by_split.index or "test" not in by_split.index:
            continue
        train, test = by_split.loc["train"], by_split.loc["test"]
        held = train > 0
        if held.sum() == 0 or test.sum() == 0:
            continue
        per_client.append(float(test[held].sum() / test.sum() / held.sum()))
    return sum(per_client) / len(per_client) if per_client else None


@dataclass(frozen=True)
class Evaluation:
    """One evaluated round's mean client accuracy, and chance for its clients.

    Attributes
    ----------
    accuracy : float
        Mean client test accuracy.
    round : int
        The round.
    num_clients : int
        Clients evaluated in that round (0 when ``clients.csv`` is missing).
    chance : float or None
        :func:`chance_accuracy` over those clients.
    """

    accuracy: float
    round: int
    num_clients: int
    chance: float | None


@dataclass(frozen=True)
class RunResult:
    """A run folder's headline figures.

    Attributes
    ----------
    folder : Path
        The run folder.
    status : str
        ``completed``, ``failed`` or ``running`` (from ``summary.json``).
    rounds_completed : int
        Rounds recorded.
    final : Evaluation or None
        The last evaluated round (of the training phase, where the run also
        fitted held-out clients afterwards); ``None`` if nothing was evaluated.
    novel : Evaluation or None
        The held-out (novel) clients' last evaluation, where the run has them
        (pFedHN's ``novel`` entry in ``summary.json``).
    config : dict
        The run's resolved configuration.
    """

    folder: Path
    status: str
    rounds_completed: int
    final: Evaluation | None
    novel: Evaluation | None
    config: dict[str, Any]


def _evaluation(
    rounds: pd.DataFrame,
    clients: pd.DataFrame,
    partition: pd.DataFrame | None,
    up_to: int | None = None,
) -> Evaluation | None:
    """The last round of ``rounds`` (up to round ``up_to``) with an accuracy."""
    if "test_acc_mean" not in rounds:
        return None
    evaluated = rounds.dropna(subset=["test_acc_mean"])
    if up_to is not None:
        evaluated = evaluated[evaluated["round"] <= up_to]
    if evaluated.empty:
        return None
    last = evaluated.iloc[-1]
    rnd = int(last["round"])
    ids: list[int] | None = None
    if not clients.empty:
        ids = sorted(
            int(i) for i in clients.loc[clients["round"] == rnd, "partition_id"]
        )
    chance = None if partition is None else chance_accuracy(partition, ids)
    return Evaluation(float(last["test_acc_mean"]), rnd, len(ids or []), chance)


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def read_result(folder: str | Path) -> RunResult:
    """Read a run folder's records (summary, rounds, clients and partition).

    Where ``summary.json`` has a ``novel`` entry (clients held out of
    training and fitted afterwards), ``final`` is the last evaluation of the
    training phase (rounds up to ``num_rounds``) and ``novel`` the held-out
    clients' last one.
    """
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text())
    config = summary.get("config", {})
    rounds = _read_csv(folder / "rounds.csv")
    clients = _read_csv(folder / "clients.csv")
    partition_file = folder / "partition.csv"
    partition = pd.read_csv(partition_file) if partition_file.is_file() else None
    held_out = bool(summary.get("novel")) and "num_rounds" in config
    final = _evaluation(
        rounds, clients, partition, int(config["num_rounds"]) if held_out else None
    )
    novel = _evaluation(rounds, clients, partition) if held_out else None
    return RunResult(
        folder=folder,
        status=str(summary.get("status", "unknown")),
        rounds_completed=int(summary.get("rounds_completed", 0)),
        final=final,
        novel=novel,
        config=config,
    )


def percent(value: float | None) -> str:
    """``0.9739`` as ``97.4 %``; ``--`` for a missing value."""
    return "--" if value is None else f"{100 * value:.1f} %"


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _clients(n: int) -> str:
    return "the clients" if n == 0 else f"{n} client" + ("" if n == 1 else "s")


def run_line(result: RunResult) -> str:
    """One line: the run's final mean client accuracy beside chance."""
    algorithm = result.config.get("algorithm", result.folder.name)
    final = result.final
    if final is None:
        return (
            f"{algorithm}: no evaluation recorded ({result.status}, "
            f"{result.rounds_completed} rounds)"
        )
    text = (
        f"{algorithm}: final mean client accuracy {percent(final.accuracy)} "
        f"at round {final.round} over {_clients(final.num_clients)}; "
        f"chance {percent(final.chance)} "
        "(a uniform guess among each client's own classes)"
    )
    if result.novel is not None:
        novel = result.novel
        text += (
            f"; held-out clients {percent(novel.accuracy)} at round {novel.round} "
            f"over {_clients(novel.num_clients)} (chance {percent(novel.chance)})"
        )
    if result.status != "completed":
        text += f" [{result.status}]"
    return text


def sweep_lines(
    results: list[RunResult], labels: list[str], title: str, figure: str | None
) -> list[str]:
    """The sweep's table: one row per run, then where the figure is."""
    header = ("run", "final mean client acc", "chance", "round", "records")
    rows = [
        (
            label,
            percent(r.final.accuracy if r.final else None)
            + ("" if r.status == "completed" else f" ({r.status})"),
            percent(r.final.chance if r.final else None),
            str(r.final.round) if r.final else "--",
            shown_path(r.folder),
        )
        for label, r in zip(labels, results, strict=True)
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
        return "  " + "   ".join([*padded, cells[4]])

    out = [f"sweep summary: {title}", line(header), *(line(row) for row in rows)]
    out.append(f"  ({CHANCE_NOTE})")
    if figure:
        out.append(f"figure: {figure}")
    return out


def summarize_sweep(
    folders: list[Path], sweep_dir: Path, figure_name: str | None
) -> list[str]:
    """The lines for a finished sweep; draws its figure when ``figure_name`` is set.

    Parameters
    ----------
    folders : list of Path
        The sweep's run folders (those without a recorded round are listed
        but not drawn).
    sweep_dir : Path
        The sweep folder (the figure goes there).
    figure_name : str, optional
        File name of the figure; ``None`` draws none.
    """
    from pflcore.reports.plots import (
        NoResultsError,
        find_runs,
        label_of,
        plot_runs,
        title_of,
        varying_keys,
    )

    results = [read_result(f) for f in folders if (f / "summary.json").is_file()]
    if not results:
        return [f"sweep summary: no run records under {shown_path(sweep_dir)}"]
    try:
        runs = find_runs([r.folder for r in results])
    except NoResultsError:
        runs = []
    by_folder = {run.folder: run for run in runs}
    keys = varying_keys(runs) if len(runs) > 1 else []
    labels = [
        label_of(by_folder[r.folder], keys)
        if r.folder in by_folder
        else str(r.config.get("algorithm", r.folder.name))
        for r in results
    ]
    title = f"{shown_path(sweep_dir)} ({title_of(runs)})" if runs else ""
    figure = None
    if figure_name and runs:
        try:
            figure = shown_path(
                plot_runs([r.folder for r in results], sweep_dir / figure_name)
            )
        except (OSError, ValueError, KeyError) as exc:  # a figure must not fail a sweep
            figure = f"not drawn ({type(exc).__name__}: {exc})"
    return sweep_lines(results, labels, title or shown_path(sweep_dir), figure)


class SweepSummary(Callback):
    """Hydra callback: a line after every job, a table after every sweep.

    Parameters
    ----------
    figure : str, optional
        File name of the sweep's figure, drawn into the sweep folder
        (``None`` or empty: no figure).
    """

    def __init__(self, figure: str | None = "accuracy.png") -> None:
        self.figure = figure or None
        self.folders: list[Path] = []

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        """Print the finished job's line and remember its folder for the sweep."""
        try:
            folder = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
        except AttributeError:
            return
        if not (folder / "summary.json").is_file():
            return
        self.folders.append(folder)
        print(run_line(read_result(folder)), flush=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        """Print the sweep's table (and draw its figure)."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        folders = self.folders or sorted(
            p.parent for p in sweep_dir.rglob("summary.json")
        )
        lines = summarize_sweep(folders, sweep_dir, self.figure)
        print("\n".join(lines), flush=True)
