"""The optional tracking sink mirrors rounds.csv; an unusable setting stops early."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import os
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from pflcore.config import ConfigError
from pflcore.config.trackers import check_tracking
from pflcore.records.results import ClientEval, RunRecorder
from pflcore.records.tracking import round_scalars
from tests.mainrun import run_module


def record_three_rounds(folder: Path, tracking: str) -> pd.DataFrame:
    """A recorder run of three rounds (round 2 without training); rounds.csv back."""
    recorder = RunRecorder(folder, {"seed": 0, "tracking": tracking})
    for server_round, correct in ((1, (3, 5)), (2, (4, 6)), (3, (7, 8))):
        if server_round != 2:
            recorder.log_train(1.0 / server_round, num_clients=2)
        recorder.add_bytes(sent=123_456_789 * server_round, received=1000)
        recorder.log_eval(
            [
                ClientEval(partition_id=j, correct=c, loss_sum=0.3 * c, num_samples=10)
                for j, c in enumerate(correct)
            ]
        )
        recorder.end_round(server_round)
    recorder.write_summary(status="completed")
    return pd.read_csv(folder / "rounds.csv")


def expected_scalars(rounds: pd.DataFrame) -> dict[str, dict[int, float]]:
    """Every numeric, non-empty rounds.csv cell, by column and round."""
    out: dict[str, dict[int, float]] = {}
    for column in rounds.columns.drop("round"):
        for r, value in zip(rounds["round"], rounds[column], strict=True):
            if pd.notna(value):
                out.setdefault(column, {})[int(r)] = float(value)
    return out


def test_bad_value_and_missing_package_are_one_line_errors(monkeypatch):
    assert check_tracking("none") == "none" and check_tracking(None) == "none"
    with pytest.raises(ConfigError, match=r"^tracking must be one of none, "):
        check_tracking("mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    with pytest.raises(ConfigError) as info:
        check_tracking("tensorboard")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("tracking=tensorboard needs the tensorboard package")
    assert "pip install" in message


def test_round_scalars_keep_finite_numbers_but_the_round():
    row = {"round": 4, "a": 1, "b": 0.5, "c": float("nan"), "d": "x", "e": True}
    assert round_scalars(row) == {"a": 1.0, "b": 0.5}


def test_tensorboard_event_files_hold_what_rounds_csv_holds(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    rounds = record_three_rounds(tmp_path, "tensorboard")
    assert math.isnan(rounds.loc[1, "train_loss"])  # round 2 did not train
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    expected = expected_scalars(rounds)
    assert set(events.Tags()["scalars"]) == set(expected)
    assert sorted(expected["train_loss"]) == [1, 3]
    for tag, by_round in expected.items():
        logged = {e.step: e.value for e in events.Scalars(tag)}
        assert logged == pytest.approx(by_round, rel=1e-6)  # stored as float32


class FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.logged: list[tuple[int, dict]] = []
        self.finished = False

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


def test_wandb_gets_every_row_offline_and_is_finished(tmp_path, monkeypatch):
    runs: list[FakeRun] = []
    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)

    def init(**kwargs):
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    fake.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    rounds = record_three_rounds(tmp_path, "wandb")
    (run,) = runs
    assert run.init_kwargs["mode"] == "offline"
    assert run.init_kwargs["dir"] == str(tmp_path)
    assert os.environ["WANDB_MODE"] == "offline"
    assert run.finished
    by_step = dict(run.logged)
    assert sorted(by_step) == [1, 2, 3]
    for column, by_round in expected_scalars(rounds).items():
        for r, value in by_round.items():
            assert by_step[r][column] == pytest.approx(value)
    assert "train_loss" not in by_step[2]


def test_real_wandb_writes_an_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    record_three_rounds(tmp_path, "wandb")
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_a_bad_tracking_setting_stops_the_main_before_ray(tmp_path):
    result = run_module(
        "fedper.main",
        "tracking=mlflow",
        "dataset=digits",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: tracking must be one of none, tensorboard, wandb, got 'mlflow'"
    ]
    assert not (tmp_path / "rounds.csv").exists()
