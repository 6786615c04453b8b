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
