"""The end-of-run line and the sweep table: accuracy beside a hand-worked chance."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pflcore.records.results import ClientEval, RunRecorder
from pflcore.reports.summary import SweepSummary, chance_accuracy, read_result, run_line

# Client 0 holds classes 0 and 1 (test: the same); client 1 holds 0-3 but a quarter of
# its test samples are class 0 and three quarters class 4, which it never saw.
COUNTS = np.array(
    [
        [[5, 5, 0, 0, 0], [2, 2, 0, 0, 0]],
        [[1, 1, 1, 1, 0], [1, 0, 0, 0, 3]],
    ]
)


def partition_frame() -> pd.DataFrame:
    rows = [
        {
            "partition_id": j,
            "split": split,
            **{f"c{c}": int(n) for c, n in enumerate(v)},
        }
        for j in range(2)
        for split, v in zip(("train", "test"), COUNTS[j], strict=True)
    ]
    return pd.DataFrame(rows)


def test_chance_is_the_expected_accuracy_of_guessing_among_own_classes():
    # client 0: 1/2; client 1: P(test class held) = 1/4, guessed right 1 time in 4.
    assert chance_accuracy(partition_frame(), [0]) == pytest.approx(0.5)
    assert chance_accuracy(partition_frame(), [1]) == pytest.approx(0.25 / 4)
    assert chance_accuracy(partition_frame()) == pytest.approx((0.5 + 0.0625) / 2)
    assert chance_accuracy(partition_frame(), [7]) is None


def fake_run(folder: Path, algorithm: str, accuracies: list[list[float]]) -> Path:
    """A run folder written by the real recorder: rounds of two clients' accuracies."""
    config = {
        "algorithm": algorithm,
        "seed": 0,
        "num_clients": 2,
        "dataset": {"name": "digits", "classes_per_client": 2},
    }
    recorder = RunRecorder(folder, config)
    recorder.write_partition(COUNTS)
    for server_round, accs in enumerate(accuracies, start=1):
        recorder.log_train(0.5, num_clients=2)
        recorder.log_eval(
            [
                ClientEval(
                    partition_id=j, correct=round(a * 20), loss_sum=1.0, num_samples=20
                )
                for j, a in enumerate(accs)
            ]
        )
        recorder.end_round(server_round)
    recorder.write_summary(status="completed")
    return folder


def test_run_line_gives_final_mean_accuracy_beside_chance(tmp_path):
    folder = fake_run(tmp_path / "fedper", "fedper", [[0.5, 0.5], [0.9, 0.8]])
    result = read_result(folder)
    assert result.final is not None and result.novel is None
    assert result.final.accuracy == pytest.approx(0.85) and result.final.round == 2
    assert result.final.chance == pytest.approx(0.28125)
    assert result.final.num_clients == 2
    line = run_line(result)
    assert line.startswith("fedper: final mean client accuracy 85.0 % at round 2")
    assert "over 2 clients" in line and "chance 28.1 %" in line


def test_sweep_callback_prints_a_line_per_job_then_a_table_and_draws_the_figure(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    callback = SweepSummary()
    runs = {
        "fedavg": [[0.1, 0.2], [0.4, 0.6]],
        "fedper": [[0.5, 0.5], [1.0, 0.9]],
    }
    for algorithm, accs in runs.items():
        folder = fake_run(tmp_path / "sweep" / algorithm, algorithm, accs)
        hydra_cfg = OmegaConf.create(
            {"hydra": {"runtime": {"output_dir": str(folder)}}}
        )
        callback.on_job_end(
            config=None, job_return=SimpleNamespace(hydra_cfg=hydra_cfg)
        )
    callback.on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("fedavg: final mean client accuracy 50.0 %")
    assert lines[1].startswith("fedper: final mean client accuracy 95.0 %")
    assert lines[2].startswith("sweep summary: sweep (digits")
    table = {line.split()[0]: line.split() for line in lines[4:6]}
    assert table["fedavg"][1:6] == ["50.0", "%", "28.1", "%", "2"]
    assert table["fedper"][1:6] == ["95.0", "%", "28.1", "%", "2"]
    assert table["fedper"][6] == "sweep/fedper"
    assert lines[-1] == "figure: sweep/accuracy.png"
    assert (tmp_path / "sweep" / "accuracy.png").stat().st_size > 10_000


def test_held_out_clients_are_reported_apart_from_the_training_phase(tmp_path):
    # pFedHN-style: rounds 1-2 train and evaluate both clients; round 3 fits and
    # evaluates held-out client 1 only, and summary.json has a "novel" entry.
    config = {"algorithm": "pfedhn", "seed": 0, "num_rounds": 2}
    recorder = RunRecorder(tmp_path, config)
    recorder.write_partition(COUNTS)
    for server_round, evaluated in ((1, [0, 1]), (2, [0, 1]), (3, [1])):
        recorder.log_eval(
            [
                ClientEval(partition_id=j, correct=10 + j, loss_sum=1.0, num_samples=20)
                for j in evaluated
            ]
        )
        recorder.end_round(server_round)
    recorder.set_summary(novel={"round": 3, "test_acc_mean": 0.55})
    recorder.write_summary(status="completed")
    result = read_result(tmp_path)
    assert result.final is not None and result.novel is not None
    assert (result.final.round, result.final.num_clients) == (2, 2)
    assert result.final.accuracy == pytest.approx((0.5 + 0.55) / 2)
    assert result.final.chance == pytest.approx(0.28125)
    assert (result.novel.round, result.novel.num_clients) == (3, 1)
    assert result.novel.chance == pytest.approx(0.0625)
    assert run_line(result).endswith(
        "held-out clients 55.0 % at round 3 over 1 client (chance 6.2 %)"
    )
