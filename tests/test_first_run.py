"""A quick sweep as a new user runs it: quiet terminal, summary, tracking mirror.

One two-job ``--multirun`` (FedAvg and FedPer, small CNN, generated CIFAR-10
files) with ``tracking=tensorboard``, and one verbose run, through the real
Ray simulation.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tests.fakedata import write_cifar10
from tests.mainrun import OWN_RAY, output_tail, run_module

pytestmark = OWN_RAY

SMALL = [
    "model=small_cnn",
    "dataset.image_size=8",
    "dataset.classes_per_client=2",
    "dataset.class_assignment=balanced",  # clients 0-4 hold classes {2j, 2j+1}
    "num_clients=5",
    "num_rounds=2",
    "local_epochs=1",
    "batch_size=16",
    "eval_batch_size=64",
]
# What Flower, Ray and Python print on their own during a simulation.
NOISE = (
    "DEPRECATED FEATURE",
    "run_simulation",
    "FutureWarning",
    "Manually terminating",
    "ClientAppActor",
    "WARNING",
    "Ray deduplicates",
    "Traceback",
)
# Every line a quiet sweep may print.
ALLOWED = [
    r"\[[\d\- :,]+\]\[HYDRA\] (Launching \d+ jobs locally|\t#\d+ : .*)",
    r"\[round +\d+/\d+\] acc .* elapsed \d+:\d\d  left ~.*",
    r"results: .*",
    r"(fedavg|fedper): final mean client accuracy \d+\.\d % at round 2 over 5 "
    r"clients; chance 50\.0 % .*",
    r"sweep summary: .*",
    r"  run +final mean client acc +chance +round +records",
    r"  (fedavg|fedper) +\d+\.\d % +50\.0 % +2 +\S+",
    r"  \(chance: .*\)",
    r"figure: .*accuracy\.png",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, per_batch=40, test=40)
    return root


@pytest.fixture(scope="module")
def sweep(data_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    result = run_module(
        "fedper.main",
        "--multirun",
        "algorithm=fedavg,fedper",
        "tracking=tensorboard",
        f"dataset.root={data_root}",
        f"hydra.sweep.dir={folder}",
        "hydra.sweep.subdir=${algorithm}",
        *SMALL,
        cwd=folder,
        own_ray=True,  # as a user's first run: it starts Ray itself
    )
    assert result.returncode == 0, output_tail(result)
    return result, folder


@pytest.mark.slow
def test_a_quiet_sweep_prints_progress_results_and_summary_only(sweep):
    result, _ = sweep
    output = result.stdout + result.stderr
    for noise in NOISE:
        assert noise not in output, output[-3000:]
    assert result.stderr.strip() == "", result.stderr[-3000:]
    lines = result.stdout.splitlines()
    strays = [x for x in lines if not any(re.fullmatch(p, x) for p in ALLOWED)]
    assert strays == [], result.stdout[-3000:]
    assert sum(x.startswith("[round ") for x in lines) >= 4  # first and last, twice


@pytest.mark.slow
def test_the_summary_matches_the_records_and_chance_is_one_over_k(sweep):
    result, folder = sweep
    lines = result.stdout.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("sweep summary:"))
    for algorithm in ("fedavg", "fedper"):
        rounds = pd.read_csv(folder / algorithm / "rounds.csv")
        final = f"{100 * rounds['test_acc_mean'].iloc[-1]:.1f} %"
        # 2 classes per client, test classes = training classes: chance is 1/2
        row = next(x for x in lines[start:] if x.startswith(f"  {algorithm} "))
        assert row.split()[1:6] == [*final.split(), "50.0", "%", "2"]
        assert f"{algorithm}: final mean client accuracy {final}" in result.stdout
    assert (folder / "accuracy.png").stat().st_size > 10_000
    assert lines[-1] == "figure: accuracy.png"  # relative to where the user ran


@pytest.mark.slow
def test_tensorboard_mirrors_every_round_of_each_run(sweep):
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    _, folder = sweep
    for algorithm in ("fedavg", "fedper"):
        rounds = pd.read_csv(folder / algorithm / "rounds.csv")
        events = EventAccumulator(str(folder / algorithm / "tensorboard"))
        events.Reload()
        for column in ("test_acc_mean", "train_loss", "bytes_sent", "test_acc_p10"):
            logged = [(e.step, e.value) for e in events.Scalars(column)]
            expected = list(zip(rounds["round"], rounds[column], strict=True))
            assert [s for s, _ in logged] == [r for r, _ in expected]
            assert [v for _, v in logged] == pytest.approx(
                [v for _, v in expected], rel=1e-6
            )


@pytest.mark.slow
def test_verbose_brings_the_messages_back(data_root, tmp_path):
    result = run_module(
        "fedper.main",
        "verbose=true",
        "algorithm=fedavg",
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path}",
        *SMALL[:-3],
        "num_rounds=1",
        cwd=tmp_path,
        own_ray=True,
    )
    assert result.returncode == 0, output_tail(result)
    output = result.stdout + result.stderr
    assert "DEPRECATED FEATURE" in output and "run_simulation" in output
    assert "FutureWarning" in output
    assert "INFO" in output  # Flower's per-round lines
