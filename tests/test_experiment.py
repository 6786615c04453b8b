"""pflcore.run.experiment: how a run's end is recorded, without starting Ray."""

import json
import signal

import pytest
from flwr.clientapp import ClientApp

import pflcore.run.experiment
import pflcore.run.stopping
from pflcore.records.results import RunRecorder
from pflcore.run.experiment import run_main_loop, stopped_by_signal
from pflcore.run.stopping import RunStopped, StopSignal

CONFIG = {"num_clients": 2, "client_resources": {"num_cpus": 1}, "verbose": False}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KeyboardInterrupt(), True),
        (RunStopped(int(signal.SIGINT)), True),
        (StopSignal(int(signal.SIGTERM)), True),
        (SystemExit(int(signal.SIGTERM)), True),
        (SystemExit(128 + int(signal.SIGTERM)), True),
        (SystemExit(2), False),
        (RuntimeError("client 3 failed"), False),
    ],
)
def test_signals_stop_a_run_errors_fail_it(exc, expected):
    assert stopped_by_signal(exc) is expected


@pytest.mark.parametrize(
    ("exc", "status", "ends_with"),
    [
        (SystemExit(15), "interrupted", StopSignal),
        (RuntimeError("boom"), "failed", SystemExit),
    ],
)
def test_the_summary_says_interrupted_for_a_signal_and_failed_for_an_error(
    tmp_path, monkeypatch, capsys, exc, status, ends_with
):
    def ends(*args, **kwargs):
        raise exc

    monkeypatch.setattr(pflcore.run.experiment, "run_federation", ends)
    monkeypatch.setattr(pflcore.run.stopping, "STATE", pflcore.run.stopping.RunState())
    recorder = RunRecorder(tmp_path, CONFIG)
    with pytest.raises(ends_with) as stop:
        run_main_loop(lambda grid, mapping: None, recorder, ClientApp(), CONFIG)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == status
    if ends_with is SystemExit:  # an error: one line, exit status 2
        assert stop.value.code == 2
        assert "run failed after 0 recorded rounds" in capsys.readouterr().err
    else:  # a signal: the entry point prints the line and exits 143
        assert stop.value.signum == signal.SIGTERM
        assert "run failed" not in capsys.readouterr().err


def test_after_a_signal_whatever_the_engine_raises_is_the_stop(tmp_path, monkeypatch):
    def crashes(*args, **kwargs):
        raise RuntimeError("Simulation Runtime crashed.")  # actors gone

    state = pflcore.run.stopping.RunState(signum=int(signal.SIGINT))
    monkeypatch.setattr(pflcore.run.stopping, "STATE", state)
    monkeypatch.setattr(pflcore.run.experiment, "run_federation", crashes)
    recorder = RunRecorder(tmp_path, CONFIG)
    with pytest.raises(StopSignal):
        run_main_loop(lambda grid, mapping: None, recorder, ClientApp(), CONFIG)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == (
        "interrupted"
    )


@pytest.mark.parametrize(
    ("exc", "status"),
    [(None, "completed"), (RuntimeError("client 2 failed"), "failed"),
     (KeyboardInterrupt(), "interrupted")],
)  # fmt: skip
def test_the_server_apps_loop_closes_its_own_record(tmp_path, exc, status):
    from pflcore.run.experiment import recorded

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
        pflcore.run.experiment, "run_federation", server_fails_then_engine_raises
    )
    recorder = RunRecorder(tmp_path, CONFIG)
    with pytest.raises(SystemExit):
        run_main_loop(lambda grid, mapping: None, recorder, ClientApp(), CONFIG)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["error"] == "ClientError: client 1 failed"  # the precise one
    assert "Simulation Runtime crashed" in capsys.readouterr().err
