"""One SIGINT or SIGTERM stops a real run cleanly; no process outlives a run.

Each test starts ``python -m fedper.main`` on the digits quick preset (four
clients, one local epoch) in a session of its own (:class:`LiveRun`), sends
one signal at a chosen moment, and checks against facts outside the code:
the exit status (130 for SIGINT, 143 for SIGTERM), the time from the signal
to the end of the process (under 10 s), the last line on stderr (the rounds
in ``rounds.csv``, the folder, the command that resumes), no traceback,
``summary.json``'s status, and the processes: every process noted below the
run while it ran, and every process of its session, has ended within
:data:`GRACE_S` seconds of its end. Moments inside a round are reached with
``inject.client_failure``'s sleep: one client sleeps two minutes in that
stage, and the signal goes when its line appears.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pflcore.run.checkpoint import read_checkpoint
from tests.liverun import LiveRun, command_of
from tests.mainrun import OWN_RAY

pytestmark = [pytest.mark.slow, OWN_RAY]

GRACE_S = 10.0  # the stated grace for a run's processes after its end
EXIT_WITHIN_S = 10.0
BASE = [
    "experiment=fedper/quick",
    "algorithm=fedavg",
    "num_clients=4",
    "local_epochs=1",
    "num_rounds=3",
    "checkpoint_every=1",
]
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def sleeping(stage: str, server_round: int) -> list[str]:
    """Overrides that make client 0 sleep 120 s in ``stage`` of ``server_round``."""
    return [
        "inject.client_failure.partition=0",
        f"inject.client_failure.round={server_round}",
        f"inject.client_failure.stage={stage}",
        "inject.client_failure.mode=timeout",
        "inject.client_failure.sleep_s=120",
    ]


def rounds_in(folder: Path) -> list[int]:
    return pd.read_csv(folder / "rounds.csv")["round"].tolist()


def status_of(folder: Path) -> str:
    return json.loads((folder / "summary.json").read_text())["status"]


def command(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "fedper.main", *args])


def stop_and_check(run: LiveRun, signum: int) -> str:
    """Send ``signum``; check status, time, no traceback, processes; the last line."""
    try:
        run.send(signum)
        code = run.wait()
    finally:
        if run.process.poll() is None:
            run.kill()
    output = run.output()
    print(f"{signal.Signals(signum).name}: {run.seconds_to_exit():.2f} s to exit")
    assert code == STATUS[signum], output[-3000:]
    assert run.seconds_to_exit() < EXIT_WITHIN_S, run.seconds_to_exit()
    assert "Traceback" not in output, output[-3000:]
    assert run.leftovers(GRACE_S) == []
    assert len(run.noted) >= 3  # Ray's processes were seen, and have ended
    return [line for line in run.stderr if line.strip()][-1]


@pytest.fixture
def started(tmp_path):
    runs: list[LiveRun] = []

    def start(*args: str) -> LiveRun:
        run = LiveRun("fedper.main", *args, cwd=tmp_path)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.kill()


def test_sigterm_in_a_round_stops_and_the_printed_command_resumes(started, tmp_path):
    folder = tmp_path / "run"
    args = [*BASE, *sleeping("train", 2), f"hydra.run.dir={folder}"]
    run = started(*args)
    run.wait_for(run.saw("injected fault: client 0 sleeps in train of round 2"))
    last = stop_and_check(run, signal.SIGTERM)
    assert last == (
        f"interrupted by SIGTERM after 1 recorded round (in {folder}); "
        f"resume from the checkpoint of round 1: {command(*args)}"
    )
    assert status_of(folder) == "interrupted" and rounds_in(folder) == [1]

    # the printed command, less the test's fault, finishes the run: a normal end
    words = [w for w in shlex.split(last.split(": ", 1)[1]) if "inject." not in w]
    resumed = started(*words[3:])
    assert resumed.wait() == 0, resumed.output()[-3000:]
    assert resumed.saw("resuming")()
    assert status_of(folder) == "completed" and rounds_in(folder) == [1, 2, 3]
    assert resumed.leftovers(GRACE_S) == []


@pytest.mark.parametrize(
    ("moment", "signum", "recorded", "checkpoint"),
    [
        ("evaluate", signal.SIGINT, 0, None),
        ("checkpoint", signal.SIGTERM, 2, 1),
    ],
)
def test_a_signal_in_evaluation_or_checkpointing_stops_the_run(
    started, tmp_path, moment, signum, recorded, checkpoint
):
    folder = tmp_path / "run"
    server_round = 1 if moment == "evaluate" else 2
    args = [*BASE, *sleeping(moment, server_round), f"hydra.run.dir={folder}"]
    run = started(*args)
    run.wait_for(run.saw(f"sleeps in {moment} of round {server_round}"))
    last = stop_and_check(run, signum)
    since = (
        "the start" if checkpoint is None else f"the checkpoint of round {checkpoint}"
    )
    rounds = f"{recorded} recorded round{'' if recorded == 1 else 's'}"
    assert last == (
        f"interrupted by {signal.Signals(signum).name} after {rounds} (in {folder}); "
        f"resume from {since}: {command(*args)}"
    )
    assert status_of(folder) == "interrupted"
    assert rounds_in(folder) == list(range(1, recorded + 1))
    if checkpoint is not None:  # the one being written was not: the last one stays
        assert read_checkpoint(folder)["round"] == checkpoint


def test_sigint_while_ray_starts_stops_the_run(started, tmp_path):
    folder = tmp_path / "run"
    run = started(*BASE, "checkpoint_every=0", f"hydra.run.dir={folder}")
    run.wait_for(lambda: any("gcs_server" in command_of(p) for p in list(run.noted)))
    last = stop_and_check(run, signal.SIGINT)
    assert last == (
        f"interrupted by SIGINT after 0 recorded rounds (in {folder}); "
        "no checkpoints (checkpoint_every=0): it cannot be resumed"
    )
    assert status_of(folder) == "interrupted" and rounds_in(folder) == []


def test_sigint_in_a_sweep_stops_it_and_keeps_the_finished_run(started, tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "--multirun",
        *BASE,
        "num_rounds=1,3",
        *sleeping("train", 2),
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]
    run = started(*args)
    run.wait_for(run.saw("sleeps in train of round 2"))
    last = stop_and_check(run, signal.SIGINT)
    assert last == (
        f"interrupted by SIGINT after 1 recorded round (in {sweep / '1'}); "
        f"resume the sweep: {command(*args)}"
    )
    assert status_of(sweep / "0") == "completed" and rounds_in(sweep / "0") == [1]
    assert status_of(sweep / "1") == "interrupted" and rounds_in(sweep / "1") == [1]


def test_sigint_while_python_imports_ends_in_one_line(started, tmp_path):
    run = started(*BASE, f"hydra.run.dir={tmp_path / 'run'}")
    time.sleep(0.5)  # Torch, Flower and Ray take seconds to import
    run.send(signal.SIGINT)
    assert run.wait() == 130
    assert "Traceback" not in run.output()
    assert run.stderr[-1].startswith("interrupted by SIGINT ")
    assert run.stderr[-1].endswith("; nothing recorded")
    assert run.leftovers(GRACE_S) == []


def test_no_process_outlives_a_failed_run_or_a_killed_driver(started, tmp_path):
    failed = started(
        *BASE,
        "inject.client_failure.partition=1",
        "inject.client_failure.round=1",
        f"hydra.run.dir={tmp_path / 'failed'}",
    )
    assert failed.wait() == 2, failed.output()[-3000:]
    assert failed.stderr[-1].startswith("error: run failed after 0 recorded rounds")
    assert failed.leftovers(GRACE_S) == []
    assert len(failed.noted) >= 3

    killed = started(*BASE, f"hydra.run.dir={tmp_path / 'killed'}")
    killed.wait_for(lambda: (tmp_path / "killed" / "rounds.csv").is_file())
    killed.wait_for(lambda: len(rounds_in(tmp_path / "killed")) >= 1)
    ray = set(killed.noted)
    killed.send(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert len(ray) >= 5  # Ray's head, its agents and the client actors
    assert killed.leftovers(GRACE_S) == []


def test_sigint_stops_a_run_submitted_with_flwr_run(started, tmp_path, monkeypatch):
    from tests.test_flwr_run import superlink_running

    if superlink_running():
        pytest.skip("a managed local SuperLink is already running on this machine")
    home = tmp_path / "flwr-home"
    home.mkdir()
    monkeypatch.setenv("FLWR_HOME", str(home))
    folder = tmp_path / "run"
    args = [*BASE, "launcher=flwr", *sleeping("train", 2), f"hydra.run.dir={folder}"]
    run = started(*args)
    run.wait_for(run.saw("injected fault: client 0 sleeps in train of round 2"))
    # the SuperLink and the run's simulation were started for this run
    assert any("flower-superlink" in command_of(p) for p in list(run.noted))
    last = stop_and_check(run, signal.SIGINT)
    assert last == (
        f"interrupted by SIGINT after 1 recorded round (in {folder}); "
        f"resume: {command(*args)}"
    )
    assert status_of(folder) == "interrupted" and rounds_in(folder) == [1]
    assert not superlink_running()
