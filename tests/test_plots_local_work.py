"""Figures against local work: passes over a client's training images, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from pflcore.reports.plots import Run, passes_per_round, plot_runs


def run_folder(folder: Path, config: dict, train: list[int], rounds: list[int]) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"config": config}))
    lines = ["partition_id,split,c0,c1"]
    for j, n in enumerate(train):
        lines += [f"{j},train,{n - 10},10", f"{j},test,5,5"]
    (folder / "partition.csv").write_text("\n".join(lines) + "\n")
    (folder / "rounds.csv").write_text(
        "round,test_acc_mean,test_acc_std\n" + "".join(f"{r},0.5,0.1\n" for r in rounds)
    )
    clients = ["round,partition_id,accuracy,loss,correct,num_samples"]
    clients += [f"{r},{j},0.5,1.0,5,10" for r in rounds for j in range(len(train))]
    (folder / "clients.csv").write_text("\n".join(clients) + "\n")
    return folder


EPOCHS = {"algorithm": "fedavg", "num_clients": 20, "clients_per_round": 5,
          "local_epochs": 1, "batch_size": 30}  # fmt: skip
STEPS = {"algorithm": "pfedhn", "num_clients": 20, "clients_per_round": 1,
         "local_steps": 10, "batch_size": 30}  # fmt: skip


def as_run(folder: Path, config: dict) -> Run:
    return Run(folder, config, pd.read_csv(folder / "rounds.csv"), pd.DataFrame())


def test_passes_per_round_by_hand(tmp_path):
    # 5 of 20 clients, one epoch each: a quarter pass per client per round
    epochs = run_folder(tmp_path / "a", EPOCHS, [300, 300], [10])
    assert passes_per_round(as_run(epochs, EPOCHS)) == pytest.approx(0.25)
    # 1 of 20 clients, 10 steps x 30 images over a mean of 250 training images
    steps = run_folder(tmp_path / "b", STEPS, [200, 300], [50])
    assert passes_per_round(as_run(steps, STEPS)) == pytest.approx(10 * 30 / 250 / 20)
    # perfedavg's local_steps = 0 means epochs
    zero = {**EPOCHS, "local_steps": 0, "local_epochs": 2}
    assert passes_per_round(as_run(epochs, zero)) == pytest.approx(0.5)


def test_methods_with_different_rounds_share_the_axis_of_local_work(
    tmp_path, monkeypatch
):
    run_folder(tmp_path / "r" / "fedavg", EPOCHS, [300] * 4, [10, 20, 100])
    run_folder(tmp_path / "r" / "pfedhn", STEPS, [300] * 4, [50, 100, 500])
    drawn: dict[str, list[float]] = {}
    original = plt.Axes.plot

    def spy(ax, xs, ys, *args, **kwargs):
        drawn[kwargs.get("label", "")] = list(xs)
        return original(ax, xs, ys, *args, **kwargs)

    monkeypatch.setattr(plt.Axes, "plot", spy)
    out = plot_runs(
        [tmp_path / "r"], tmp_path / "f.png", x="passes",
        label_by=lambda run: run.folder.name,
    )  # fmt: skip
    assert out.is_file()
    assert drawn["fedavg"] == pytest.approx([2.5, 5.0, 25.0])
    assert drawn["pfedhn"] == pytest.approx([2.5, 5.0, 25.0])
