"""Accuracy of novel clients against their distance from the training clients.

``python -m pfedhn.novel_figure RUN [RUN ...] --out _static/pfedhn_novel.png``

Each RUN is a run folder of ``experiment=pfedhn/mnist_novel`` (or any run
with ``novel.dirichlet``): its ``summary.json`` lists the drawn novel clients
with their distances (``novel_clients``) and its ``clients.csv`` their test
accuracy in the last round (the novel phase). One series per run, labelled
by its algorithm; a ``.csv`` beside the figure lists every point.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

LABELS = {
    "pfedhn": "pFedHN (embedding fitted, HN frozen)",
    "pfedhn_pc": "pFedHN-PC (embedding fitted, HN frozen)",
    "fedavg_ft": "FedAvg + fine-tuning",
    "fedavg": "FedAvg",
}


def novel_points(run: Path) -> list[dict[str, Any]]:
    """One row per novel client: distances and last-round test accuracy."""
    summary = json.loads((run / "summary.json").read_text())
    drawn = summary.get("novel_clients")
    if not drawn:
        raise SystemExit(f"{run}: summary.json has no novel_clients (novel.dirichlet)")
    with (run / "clients.csv").open() as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["round"]) for r in rows)
    accuracy = {
        int(r["partition_id"]): float(r["accuracy"])
        for r in rows
        if int(r["round"]) == last
    }
    algorithm = summary["config"]["algorithm"]
    points = []
    for client in drawn:
        pid = int(client["partition_id"])
        if pid not in accuracy:
            raise SystemExit(f"{run}: novel client {pid} not evaluated in round {last}")
        points.append(
            {
                "algorithm": algorithm,
                "partition_id": pid,
                "concentration": client["concentration"],
                "tv_population": client["tv_population"],
                "tv_nearest": client["tv_nearest"],
                "accuracy": accuracy[pid],
            }
        )
    return points


def plot(points: list[dict[str, Any]], out: Path) -> None:
    """Two panels: accuracy vs TV to the population and to the nearest client."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, key, title in (
        (axes[0], "tv_population", "TV distance to the training population"),
        (axes[1], "tv_nearest", "TV distance to the nearest training client"),
    ):
        for algorithm in dict.fromkeys(p["algorithm"] for p in points):
            mine = sorted(
                (p for p in points if p["algorithm"] == algorithm), key=lambda p: p[key]
            )
            axis.plot(
                [p[key] for p in mine],
                [100 * p["accuracy"] for p in mine],
                marker="o",
                linestyle="-",
                label=LABELS.get(algorithm, algorithm),
            )
        axis.set_xlabel(title)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("novel client test accuracy (%)")
    axes[0].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Write the figure and its points."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="figure (.png)")
    args = parser.parse_args(argv)
    points = [p for run in args.runs for p in novel_points(run)]
    plot(points, args.out)
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(points[0]))
        writer.writeheader()
        writer.writerows(points)
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
