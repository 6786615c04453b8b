"""pflcore.experiment: how a run's end is recorded, without starting Ray."""

import json
import signal

import pytest
from flwr.clientapp import ClientApp

import pflcore.experiment
from pflcore.experiment import run_main_loop, stopped_by_signal
from pflcore.results import RunRecorder

CONFIG = {"num_clients": 2, "client_resources": {"num_cpus": 1}, "verbose": False}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KeyboardInterrupt(), True),
        (SystemExit(int(signal.SIGTERM)), True),
        (SystemExit(128 + int(signal.SIGTERM)), True),
        (SystemExit(2), False),
        (RuntimeError("client 3 failed"), False),
    ],
)
def test_signals_stop_a_run_errors_fail_it(exc, expected):
    assert stopped_by_signal(exc) is expected


@pytest.mark.parametrize(
    ("exc", "status"),
    [(SystemExit(15), "interrupted"), (RuntimeError("boom"), "failed")],
)
def test_the_summary_says_interrupted_for_a_signal_and_failed_for_an_error(
    tmp_path, monkeypatch, capsys, exc, status
):
    def ends(*args, **kwargs):
        raise exc

    monkeypatch.setattr(pflcore.experiment, "run_federation", ends)
    recorder = RunRecorder(tmp_path, CONFIG)
    with pytest.raises(SystemExit) as stop:
        run_main_loop(lambda grid, mapping: None, recorder, ClientApp(), CONFIG)
    assert stop.value.code == 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == status
    assert "run failed after 0 recorded rounds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("exc", "status"),
    [(None, "completed"), (RuntimeError("client 2 failed"), "failed"),
     (KeyboardInterrupt(), "interrupted")],
)  # fmt: skip
def test_the_server_apps_loop_closes_its_own_record(tmp_path, exc, status):
    from pflcore.experiment import recorded

    recorder = RunRecorder(tmp_path, CONFIG)

    def rounds(grid, mapping):
        recorder.log_train(0.5, 1)
        recorder.end_round(1)
        if exc is not None:
            raise exc

    loop = recorded(rounds, recorder)
    if exc is None:
        loop(None, {})
    else:
        with pytest.raises(type(exc)):
            loop(None, {})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == status and recorder.finished
    assert summary["rounds_completed"] == 1  # the finished round stays
    if status == "failed":
        assert summary["error"] == "RuntimeError: client 2 failed"


def test_a_record_the_server_app_closed_is_not_rewritten_by_the_launcher(
    tmp_path, monkeypatch, capsys
):
    def server_fails_then_engine_raises(server_app, *args, **kwargs):
        recorder.write_summary(status="failed", error="ClientError: client 1 failed")
        raise RuntimeError("Simulation Runtime crashed.")

    monkeypatch.setattr(
        pflcore.experiment, "run_federation", server_fails_then_engine_raises
    )
    recorder = RunRecorder(tmp_path, CONFIG)
    with pytest.raises(SystemExit):
        run_main_loop(lambda grid, mapping: None, recorder, ClientApp(), CONFIG)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["error"] == "ClientError: client 1 failed"  # the precise one
    assert "Simulation Runtime crashed" in capsys.readouterr().err
