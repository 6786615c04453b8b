"""``pflcore.run.stopping`` and ``pflcore.run.reaper`` without starting Ray.

The real runs are in ``tests/test_stopping_runs.py``; here: which exception
means which signal, the line and the command it prints, the grid's
stoppable polling against Flower's own loop, that Ray keeps our SIGTERM
handler, and the reaper's process bookkeeping.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import pflcore.run.stopping as stopping
from pflcore.records.results import RunRecorder
from pflcore.run import reaper
from pflcore.run.stopping import (
    RunStopped,
    StopSignal,
    resume_command,
    signal_of,
    stop_line,
)


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """A clean :data:`stopping.STATE`; no forced exit; handlers restored."""
    monkeypatch.setattr(stopping, "STATE", stopping.RunState())
    ended: list[str] = []
    monkeypatch.setattr(stopping, "force_end", lambda: ended.append("forced"))
    saved = {s: signal.getsignal(s) for s in stopping.STOP_SIGNALS}
    yield ended
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize(
    ("exc", "signum"),
    [
        (StopSignal(signal.SIGTERM), signal.SIGTERM),
        (RunStopped(signal.SIGINT), signal.SIGINT),
        (KeyboardInterrupt(), signal.SIGINT),
        (SystemExit(15), signal.SIGTERM),  # Ray's driver's handler
        (SystemExit(130), signal.SIGINT),
        (SystemExit(143), signal.SIGTERM),
        (SystemExit(2), None),  # a clean error exit, not SIGINT
        (SystemExit(0), None),
        (RuntimeError("client 3 failed"), None),
    ],
)
def test_which_exceptions_are_a_stop_and_by_which_signal(exc, signum):
    assert signal_of(exc) == signum


def test_the_exit_status_is_the_shells_for_the_signal():
    assert stopping.exit_status(signal.SIGINT) == 130
    assert stopping.exit_status(signal.SIGTERM) == 143


def recorder(tmp_path: Path, rounds: int, every: int) -> RunRecorder:
    rec = RunRecorder(tmp_path, {"checkpoint_every": every, "seed": 0})
    for server_round in range(1, rounds + 1):
        rec.log_train(0.5, 2)
        rec.end_round(server_round)
    return rec


def test_the_line_names_the_rounds_the_folder_and_the_checkpoint_it_resumes_from(
    tmp_path,
):
    stopping.expect_run("python -m fedper.main seed=1 hydra.run.dir=/r")
    assert stop_line(signal.SIGINT) == (
        "interrupted by SIGINT before the run started; nothing recorded"
    )
    stopping.watch(recorder(tmp_path, 3, every=2))
    assert stop_line(signal.SIGTERM) == (
        f"interrupted by SIGTERM after 3 recorded rounds (in {tmp_path}); "
        "resume from the start: python -m fedper.main seed=1 hydra.run.dir=/r"
    )
    stopping.note_checkpoint(2)
    assert stop_line(signal.SIGINT).endswith(
        "; resume from the checkpoint of round 2: "
        "python -m fedper.main seed=1 hydra.run.dir=/r"
    )
    stopping.watch(recorder(tmp_path / "b", 1, every=0))
    assert stop_line(signal.SIGINT) == (
        f"interrupted by SIGINT after 1 recorded round (in {tmp_path / 'b'}); "
        "no checkpoints (checkpoint_every=0): it cannot be resumed"
    )
    stopping.watch(recorder(tmp_path / "c", 1, every=1), checkpoint_known=False)
    assert stop_line(signal.SIGINT).endswith(
        "; resume: python -m fedper.main seed=1 hydra.run.dir=/r"
    )


def test_in_a_sweep_the_line_gives_the_sweep_command(tmp_path):
    sweep = "python -m fedper.main --multirun seed=0,1 hydra.sweep.dir=/s"
    stopping.expect_run(sweep)
    assert stop_line(signal.SIGINT) == (
        "interrupted by SIGINT before the run started; nothing recorded; the "
        f"finished runs are complete; resume the sweep: {sweep}"
    )
    run = recorder(tmp_path, 2, every=0)
    stopping.watch(run)
    assert stop_line(signal.SIGINT) == (
        f"interrupted by SIGINT after 2 recorded rounds (in {tmp_path}); "
        f"resume the sweep: {sweep}"
    )
    stopping.forget(run)  # the run completed: between runs again
    assert "before the run started" in stop_line(signal.SIGINT)


@pytest.mark.parametrize(
    ("argv", "key", "expected"),
    [
        (
            ["python", "-m", "fedper.main", "seed=1"],
            "hydra.run.dir",
            "python -m fedper.main seed=1 hydra.run.dir=/out/r",
        ),
        (  # a folder given is replaced, in place, by the absolute one; quoting kept
            ["py", "-m", "pfedhn.main", "hydra.run.dir=rel", "a.b=${x}_y", "n=a b"],
            "hydra.run.dir",
            "py -m pfedhn.main hydra.run.dir=/out/r 'a.b=${x}_y' 'n=a b'",
        ),
        (  # a resume command already names its folder
            ["python", "-m", "fedper.main", "resume=/old"],
            "hydra.run.dir",
            "python -m fedper.main resume=/old",
        ),
        (
            ["python", "-m", "fedper.main", "-m", "seed=0,1", "hydra.sweep.dir=s"],
            "hydra.sweep.dir",
            "python -m fedper.main -m seed=0,1 hydra.sweep.dir=/out/r",
        ),
    ],
)
def test_the_resume_command_is_this_command_into_the_same_folder(
    monkeypatch, argv, key, expected
):
    monkeypatch.setattr(sys, "orig_argv", argv)
    assert resume_command(key, "/out/r") == expected
    words = shlex.split(expected)
    assert stopping.is_multirun(expected) == ("-m" in words[3:])


def test_outside_a_federation_a_signal_raises_in_the_main_thread(fresh_state):
    stopping.install_handlers()
    assert signal.getsignal(signal.SIGTERM) is stopping._on_signal
    with pytest.raises(StopSignal) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs between bytecodes
    assert stop.value.signum == signal.SIGTERM
    assert stopping.STATE.stop.is_set() and fresh_state == []


def test_inside_a_federation_a_signal_only_asks_the_server_thread_to_stop(
    fresh_state,
):
    stopping.install_handlers()
    with stopping.federating():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        assert stopping.STATE.signum == signal.SIGINT
        with pytest.raises(RunStopped):
            stopping.raise_if_stopped()
        assert fresh_state == []  # no forced end yet ...
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        assert fresh_state == ["forced"]  # ... but at the second signal


def test_a_signal_before_the_federation_starts_stops_it_from_starting():
    stopping.STATE.signum = int(signal.SIGTERM)
    with pytest.raises(StopSignal), stopping.federating():
        pytest.fail("the federation started")


def test_ray_keeps_our_sigterm_handler_while_we_federate():
    import ray._private.ray_constants as ray_constants
    import ray._private.utils as ray_utils
    from ray._private import worker

    # ray.init installs its handler through this function (Ray 2.x)
    assert "ray._private.utils.set_sigterm_handler(sigterm_handler)" in (
        inspect.getsource(worker.init)
    )
    stopping.install_handlers()
    before = ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
    with stopping.federating():
        ray_utils.set_sigterm_handler(lambda signum, frame: sys.exit(signum))
        assert signal.getsignal(signal.SIGTERM) is stopping._on_signal
        assert ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER is True
    assert before == ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
    assert ray_utils.set_sigterm_handler.__module__ == "ray._private.utils"


class FakeGrid:
    """Replies arrive over several pulls, in an order of their own."""

    def __init__(self, arrivals: list[list[str]]) -> None:
        self.pull_interval = 0.001
        self.arrivals = [list(a) for a in arrivals]
        self.pushed: list[str] = []
        self.pulls = 0

    def push_messages(self, messages):
        self.pushed.extend(messages)
        return [f"id-{m}" for m in messages]

    def pull_messages(self, ids):
        self.pulls += 1
        batch = self.arrivals.pop(0) if self.arrivals else []
        return [
            SimpleNamespace(name=m, metadata=SimpleNamespace(reply_to_message_id=m))
            for m in batch
            if m in ids
        ]


def test_the_stoppable_grid_loop_returns_what_flowers_loop_returns():
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    arrivals = [[], ["id-b"], [], ["id-c", "id-a"]]
    flowers = FakeGrid(arrivals)
    expected = InMemoryGrid.send_and_receive(flowers, ["a", "b", "c"], timeout=5)
    ours = FakeGrid(arrivals)
    stopping.stop_between_polls(ours)
    got = ours.send_and_receive(["a", "b", "c"], timeout=5)
    assert (
        [r.name for r in got] == [r.name for r in expected] == ["id-b", "id-c", "id-a"]
    )
    assert ours.pushed == flowers.pushed and ours.pulls == flowers.pulls == 4
    # a timeout ends it as Flower's does: with what came
    late = FakeGrid([[]] * 1000)
    stopping.stop_between_polls(late)
    assert late.send_and_receive(["a"], timeout=0.05) == []


def test_the_stoppable_grid_stops_waiting_once_a_signal_came():
    grid = FakeGrid([[]] * 100000)
    grid.pull_interval = 0.01
    stopping.stop_between_polls(grid)
    stopping.STATE.signum = int(signal.SIGINT)
    stopping.STATE.stop.set()
    start = time.monotonic()
    with pytest.raises(RunStopped):
        grid.send_and_receive(["a"], timeout=60)
    assert time.monotonic() - start < 1


def test_grids_without_polling_are_left_alone():
    remote = SimpleNamespace(send_and_receive="flower's")
    stopping.stop_between_polls(remote)
    assert remote.send_and_receive == "flower's"


def test_flowers_loop_is_still_the_one_we_copy():
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    source = inspect.getsource(InMemoryGrid.send_and_receive)
    for line in (
        "msg_ids = set(self.push_messages(messages))",
        "while timeout is None or time.time() < end_time:",
        "res_msgs = self.pull_messages(msg_ids)",
        "ret.extend(res_msgs)",
        "time.sleep(self.pull_interval)",
    ):
        assert line in source, line


def test_the_entry_ends_a_stopped_run_with_its_status_a_line_and_its_summary(
    tmp_path, capfd
):
    run = recorder(tmp_path, 2, every=0)
    stopping.expect_run("python -m fedper.main")
    stopping.watch(run)

    def main():
        raise StopSignal(signal.SIGTERM)

    with pytest.raises(SystemExit) as end:
        stopping.run_entry(main)
    assert end.value.code == 143
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] == 2
    err = capfd.readouterr().err
    assert err.splitlines() == [
        f"interrupted by SIGTERM after 2 recorded rounds (in {tmp_path}); "
        "no checkpoints (checkpoint_every=0): it cannot be resumed"
    ]


@pytest.mark.parametrize(
    ("argv", "installs"),
    [
        (["python", "-m", "fedper.main", "seed=1"], True),
        (["python", "-m", "fedper.main.other"], False),
        (["/venv/bin/python", "ray/_private/workers/default_worker.py"], False),
        (["python", "-m", "pytest"], False),
    ],
)
def test_handlers_while_importing_only_for_the_packages_entry_point(
    monkeypatch, argv, installs
):
    monkeypatch.setattr(sys, "orig_argv", argv)
    before = signal.getsignal(signal.SIGINT)
    stopping.stop_at_once_while_starting("fedper")
    changed = signal.getsignal(signal.SIGINT) is not before
    assert changed == installs


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


def test_descendants_and_ending_them():
    child = sleeper()
    try:
        assert child.pid in stopping.descendants(os.getpid())
        assert child.pid in reaper.below([os.getpid()])
        stopping.end_processes({child.pid}, wait_s=2.0)
        assert child.wait(timeout=5) == -signal.SIGTERM  # asked first
    finally:
        child.kill()


def test_the_reaper_ends_only_processes_it_noted_that_still_run():
    child = sleeper()
    try:
        started = reaper.start_time(child.pid)
        assert started is not None
        # a reused pid (another start time) is not the noted process
        assert reaper.still_running({child.pid: started + 1}) == set()
        assert reaper.still_running({child.pid: started}) == {child.pid}
        reaper.end({child.pid})
        assert child.wait(timeout=5) == -signal.SIGTERM
        assert reaper.start_time(child.pid) is None
    finally:
        child.kill()


def test_processes_started_inside_the_block_are_ended_at_its_end():
    kept = sleeper()
    try:
        with stopping.ending_new_processes(wait_s=2.0):
            new = sleeper()
        assert new.wait(timeout=5) == -signal.SIGTERM
        assert kept.poll() is None  # older than the block: left alone
    finally:
        kept.kill()
