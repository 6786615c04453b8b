"""Figures from run folders: test accuracy against round, spread shaded.

``python -m pflcore.reports.plots FOLDER [FOLDER ...] --out figure.png`` finds every
run below the folders (a run folder holds ``rounds.csv`` and
``summary.json``), labels each run by the config keys that differ between
runs, and draws one line per label: the mean over clients, shaded by the
spread across clients (mean +- std), or, when a label has several seeds, the
mean over seeds shaded by the spread across seeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from pflcore.config import flatten

# One colour per method, the same in every figure.
METHOD_COLOURS = {
    "fedavg": "#1f77b4",
    "fedper": "#d62728",
    "local": "#7f7f7f",
    "fedavg_ft": "#17becf",
    "pfedhn": "#2ca02c",
    "pfedhn_pc": "#98df8a",
    "perfedavg_fo": "#9467bd",
    "perfedavg_hf": "#c5b0d5",
    "fedfomo": "#ff7f0e",
    "ditto": "#8c564b",
}
# Keys that never change a run's numbers (a resumed run repeats its records bit for
# bit; the launcher and checkpoints do not touch the maths), so runs differing only in
# them are one curve.
IGNORED_KEYS = {
    "seed",
    "timeout_s",
    "verbose",
    "tracking",
    "dataset.root",
    "dataset.path",
    "resume",
    "checkpoint_every",
    "launcher",
    "superlink",
    "ray_address",
    "partition.embedding.cache_dir",
}


class NoResultsError(FileNotFoundError):
    """A folder holds no run results."""


@dataclass
class Run:
    """One run folder's records."""

    folder: Path
    config: dict[str, Any]
    rounds: pd.DataFrame
    clients: pd.DataFrame


def find_runs(folders: list[str | Path]) -> list[Run]:
    """Every run folder below ``folders`` that has recorded at least one round.

    Raises
    ------
    NoResultsError
        If none is found.
    """
    runs = []
    for folder in folders:
        for rounds_file in sorted(Path(folder).rglob("rounds.csv")):
            run_dir = rounds_file.parent
            summary_file = run_dir / "summary.json"
            if not summary_file.is_file():
                continue
            rounds = pd.read_csv(rounds_file)
            if rounds.empty:
                continue
            clients_file = run_dir / "clients.csv"
            clients = (
                pd.read_csv(clients_file) if clients_file.is_file() else pd.DataFrame()
            )
            config = json.loads(summary_file.read_text()).get("config", {})
            runs.append(Run(run_dir, flatten(config), rounds, clients))
    if not runs:
        raise NoResultsError(
            f"no run results (rounds.csv with at least one round, and summary.json) "
            f"under {', '.join(str(f) for f in folders)}"
        )
    return runs


def varying_keys(runs: list[Run]) -> list[str]:
    """Config keys present in every run whose values differ (seed excluded)."""
    shared = set.intersection(*(set(r.config) for r in runs))
    keys = sorted(shared - IGNORED_KEYS)
    return [k for k in keys if len({json.dumps(r.config.get(k)) for r in runs}) > 1]


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest trailing part that no other key in ``keys`` shares.

    ``["hn.lr", "embed_lr", "head.lr"]`` gives ``hn.lr``, ``embed_lr``, ``head.lr``;
    ``["model.target"]`` gives ``target``.
    """
    names = {}
    for key in keys:
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[-depth:])
            others = [k for k in keys if k != key]
            if not any(k == name or k.endswith(f".{name}") for k in others):
                break
        names[key] = name
    return names


def label_of(run: Run, keys: list[str]) -> str:
    """A legend label from the run's values of ``keys``."""
    if not keys:
        return str(run.config.get("algorithm", run.folder.name))
    names = short_names(keys)
    parts = []
    for key in keys:
        value = run.config.get(key)
        parts.append(str(value) if key == "algorithm" else f"{names[key]}={value}")
    return ", ".join(parts)


def client_band(run: Run, column: str = "accuracy") -> pd.DataFrame:
    """Per evaluated round: mean and std of client accuracy (or another column)."""
    if column != "accuracy":
        rows = run.clients.dropna(subset=[column]).groupby("round")[column]
        return pd.DataFrame({"mean": rows.mean(), "spread": rows.std(ddof=0)})
    if not run.clients.empty:
        grouped = run.clients.groupby("round")["accuracy"]
        return pd.DataFrame({"mean": grouped.mean(), "spread": grouped.std(ddof=0)})
    rows = run.rounds.dropna(subset=["test_acc_mean"]).set_index("round")
    return pd.DataFrame({"mean": rows["test_acc_mean"], "spread": rows["test_acc_std"]})


def _shared(runs: list[Run], key: str) -> Any:
    """The value of ``key`` if every run has the same one, else None."""
    values = {json.dumps(r.config.get(key), default=str) for r in runs}
    return runs[0].config.get(key) if len(values) == 1 else None


def partition_of(runs: list[Run]) -> str | None:
    """The partition the runs share, in words (None if it differs or is unknown)."""
    kind = _shared(runs, "partition.kind") or _shared(runs, "partition.name")
    if kind == "pathological":
        shards = _shared(runs, "partition.shards_per_client")
        return f"pathological, {shards} shards/client" if shards else "pathological"
    if kind:
        return str(kind)
    k = _shared(runs, "partition.classes_per_client")
    if k is None and "partition.name" not in runs[0].config:
        k = _shared(runs, "dataset.classes_per_client")
    return f"k={k} classes/client" if k is not None else None


def title_of(runs: list[Run]) -> str:
    """Dataset, partition, clients, model and image size shared by the runs."""
    parts = [str(_shared(runs, "dataset.name") or "several datasets")]
    partition = partition_of(runs)
    if partition:
        parts.append(partition)
    parts.append(f"{_shared(runs, 'num_clients') or '?'} clients")
    models = {
        str(r.config.get("model.name") or r.config.get("model.target"))
        for r in runs
        if r.config.get("model.name") or r.config.get("model.target")
    }
    if models:  # a package with a single network may have no model key
        parts.append(", ".join(sorted(models)))
    size = _shared(runs, "dataset.image_size")
    if size is not None:
        parts.append(f"{size} px")
    return " | ".join(parts)


def passes_per_round(run: Run) -> float:
    """Expected passes over a client's training images in one round of ``run``.

    A round trains ``clients_per_round`` of ``num_clients`` clients; each
    makes ``local_epochs`` passes, or, where the method counts steps
    (``local_steps`` > 0), ``local_steps * batch_size`` images over the
    clients' mean training size (``partition.csv``).
    """
    config = run.config
    share = float(config["clients_per_round"]) / float(config["num_clients"])
    steps = int(config.get("local_steps") or 0)
    if steps <= 0:
        return share * float(config["local_epochs"])
    partition = pd.read_csv(run.folder / "partition.csv")
    train = partition[partition["split"] == "train"].iloc[:, 2:].sum(axis=1)
    return share * steps * float(config["batch_size"]) / float(train.mean())


def pooled_band(run: Run) -> pd.DataFrame:
    """Per evaluated round: pooled accuracy, with the across-client std as spread."""
    rows = run.rounds.dropna(subset=["test_acc_pooled"]).set_index("round")
    return pd.DataFrame(
        {"mean": rows["test_acc_pooled"], "spread": rows["test_acc_std"]}
    )


LINESTYLES = ("-", "--", ":", "-.")


def plot_runs(
    folders: list[str | Path],
    out: str | Path,
    title: str | None = None,
    extra: str | None = None,
    metric: str = "mean",
    ymin: float = 0.0,
    x: str = "round",
    label_by: Callable[[Run], str] | None = None,
) -> Path:
    """Draw accuracy against round (or local work) for every run below ``folders``.

    Parameters
    ----------
    folders : list of path
        Run or multirun folders.
    out : path
        PNG to write.
    title : str, optional
        Figure title (default: dataset, partition and model of the runs).
    extra : str, optional
        Also draw, dashed, the extra evaluation of that name where runs
        recorded it (e.g. ``"before"``: the model before adaptation).
    metric : str
        ``mean``: the mean over clients of client accuracy; ``pooled``: total
        correct over total test samples (pFedHN's headline). Both shaded by
        the across-client std.
    ymin : float
        Lower end of the accuracy axis.
    x : str
        ``round``, or ``passes``: the expected passes over a client's training
        images so far (:func:`passes_per_round`), which puts methods with
        different rounds on one axis of equal local work.
    label_by : callable, optional
        A run's line label (default: the config keys that differ between runs).

    Returns
    -------
    Path
        The written file.
    """
    runs = find_runs(folders)
    keys = varying_keys(runs)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        label = label_by(run) if label_by else label_of(run, keys)
        groups.setdefault(label, []).append(run)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    fallback = itertools.cycle(plt.get_cmap("tab10")(range(10)))
    # When the method varies, it picks the colour (the same in every figure) and
    # the other varying settings pick the line style; a sweep of one method's
    # settings gets one colour per setting instead.
    by_method = "algorithm" in keys or not keys
    rest_of = {
        label: tuple(str(members[0].config.get(k)) for k in keys if k != "algorithm")
        for label, members in groups.items()
    }
    style_of: dict[tuple[str, ...], str] = {}
    for rest in rest_of.values():
        style_of.setdefault(rest, LINESTYLES[len(style_of) % len(LINESTYLES)])
    for label, members in groups.items():
        algorithm = str(members[0].config.get("algorithm", ""))
        colour = METHOD_COLOURS.get(algorithm) if by_method else None
        colour = colour or next(fallback)
        linestyle = style_of[rest_of[label]] if by_method else "-"
        band_of = pooled_band if metric == "pooled" else client_band
        scale = passes_per_round(members[0]) if x == "passes" else 1.0
        bands = [band_of(r) for r in members]
        bands = [b.set_axis(b.index * scale) for b in bands]
        if len(bands) == 1:
            mean, spread = bands[0]["mean"], bands[0]["spread"]
            suffix = ""
        else:
            table = pd.concat([b["mean"] for b in bands], axis=1)
            mean, spread = table.mean(axis=1), table.std(axis=1, ddof=0)
            suffix = f" ({len(bands)} seeds)"
        few = len(mean) <= 25  # mark the points when there are few (one is invisible)
        ax.plot(
            mean.index,
            mean.to_numpy(),
            label=label + suffix,
            color=colour,
            lw=1.8,
            ls=linestyle,
            marker="o" if few else None,
            ms=3,
        )
        ax.fill_between(
            mean.index,
            np.clip(mean - spread, ymin, 1),
            np.clip(mean + spread, 0, 1),
            color=colour,
            alpha=0.18,
            lw=0,
        )
        column = f"{extra}_accuracy"
        if extra and all(column in r.clients.columns for r in members):
            lines = [client_band(r, column)["mean"] for r in members]
            dashed = pd.concat(lines, axis=1).mean(axis=1)
            ax.plot(
                dashed.index * scale,
                dashed.to_numpy(),
                label=f"{label} ({extra})",
                color=colour,
                lw=1.2,
                ls="--",
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(
        "passes over a client's training images (expected)"
        if x == "passes"
        else "round (global aggregations)"
    )
    what = "pooled over clients" if metric == "pooled" else "mean over clients"
    ax.set_ylabel(f"test accuracy (fraction, {what})")
    ax.set_ylim(ymin, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title or title_of(runs), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m pflcore.reports.plots FOLDER ... --out PNG``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="run or multirun folders")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--title", default=None)
    parser.add_argument(
        "--extra",
        default=None,
        help="also draw this extra evaluation dashed (e.g. before)",
    )
    parser.add_argument(
        "--metric",
        choices=("mean", "pooled"),
        default="mean",
        help="mean over clients (default) or pooled accuracy",
    )
    parser.add_argument("--ymin", type=float, default=0.0, help="accuracy axis start")
    parser.add_argument(
        "--x",
        choices=("round", "passes"),
        default="round",
        help="x axis: round, or passes over a client's training images",
    )
    args = parser.parse_args(argv)
    try:
        path = plot_runs(
            args.folders,
            args.out,
            args.title,
            extra=args.extra,
            metric=args.metric,
            ymin=args.ymin,
            x=args.x,
        )
    except NoResultsError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
