"""One SIGINT or SIGTERM ends a run within seconds, recorded and resumable.

``python -m <package>.main`` runs under :func:`run_entry`, which installs
handlers for both signals. What a signal does depends on where the run is:

* **Preparing** (Hydra, data, partition, model; between the runs of a
  sweep): the main thread raises :class:`StopSignal` at once.
* **In the federation** (:func:`federating`: Flower's engine runs in the
  main thread, the server's rounds in a thread of their own): the handler
  only sets a flag. The server's thread raises :class:`RunStopped` at its
  next look (between rounds, and every poll of the grid, so within 5 ms when
  it waits for clients); Flower then stops its engine and hands the
  exception back to the main thread. Raising in the main thread instead
  would leave the server's thread waiting for replies until ``timeout_s``,
  and Python waits for it at exit: the hang one Ctrl-C used to cause.

Either way :func:`run_entry` ends the process with status 130 (SIGINT) or
143 (SIGTERM) and one line: the rounds recorded, where, and the command
that resumes the run. Should anything still be running :data:`GRACE_S`
seconds after the signal (a client in the middle of a long training step
holds Flower's engine until it finishes), or a second signal arrive, the
run is ended at once: its summary written, its processes killed, the line
printed, ``os._exit``. Ray's driver would replace the SIGTERM handler with
``sys.exit(15)`` at ``ray.init``; :func:`federating` keeps ours.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 3.0  # signal to forced end; the promise to users is 10 s
POLL_S = 0.005  # the grid's poll interval when none is set


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by ``signum``: 130, 143."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``, ..."""
    return signal.Signals(signum).name


class StopSignal(BaseException):  # like KeyboardInterrupt
    """SIGINT or SIGTERM arrived; raised in the main thread.

    A ``BaseException`` so that no ``except Exception`` in the code it
    passes through takes it for an error.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)


class RunStopped(Exception):  # noqa: N818  (a stop, not an error)
    """SIGINT or SIGTERM arrived; raised in the server's thread.

    An ``Exception``: Flower's ServerApp thread hands exceptions of that
    kind back to the main thread (anything else would be printed there as a
    traceback).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal_name(signum)}")
        self.signum = int(signum)


def signal_of(exc: BaseException) -> int | None:
    """The signal ``exc`` stands for, or None if it is an error.

    :class:`StopSignal` and :class:`RunStopped` carry theirs;
    ``KeyboardInterrupt`` is SIGINT; ``SystemExit`` with 143 or 130 (or 15,
    Ray's driver's SIGTERM handler) is that signal. Bare 2 is not SIGINT:
    it is also the status of a clean error exit.
    """
    if isinstance(exc, StopSignal | RunStopped):
        return exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return int(signal.SIGINT)
    if isinstance(exc, SystemExit) and isinstance(exc.code, int):
        return {
            int(signal.SIGTERM): int(signal.SIGTERM),
            exit_status(signal.SIGINT): int(signal.SIGINT),
            exit_status(signal.SIGTERM): int(signal.SIGTERM),
        }.get(exc.code)
    return None


@dataclass
class RunState:
    """What the handlers need to know about the run this process is doing.

    Attributes
    ----------
    stop : threading.Event
        Set by the first signal.
    signum : int or None
        That signal.
    federating : bool
        Whether Flower's engine runs in the main thread (see :func:`federating`).
    recorder : object or None
        The :class:`~pflcore.records.results.RunRecorder` of the run in progress.
    checkpoint_round : int or None
        The round of the run's last checkpoint (None: none yet).
    checkpoint_known : bool
        Whether this process knows that round (a run it does not record
        itself, under ``flwr run``, does not).
    resume_command : str or None
        The command that resumes the run in progress (or the sweep).
    announced : bool
        Whether the interruption line has been printed.
    grace_s : float
        Seconds from the first signal to the forced end.
    spared : set of int
        Child processes the forced end leaves alone (the reaper).
    """

    stop: threading.Event = field(default_factory=threading.Event)
    signum: int | None = None
    federating: bool = False
    recorder: Any = None
    checkpoint_round: int | None = None
    checkpoint_known: bool = True
    resume_command: str | None = None
    announced: bool = False
    grace_s: float = GRACE_S
    spared: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = RunState()


# -- the handlers -----------------------------------------------------------


def install_handlers() -> None:
    """Handle SIGINT and SIGTERM as this module says (main thread only)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: Any) -> None:
    if STATE.signum is not None:  # the second one: no more waiting
        force_end()
    STATE.signum = int(signum)
    STATE.stop.set()
    timer = threading.Timer(STATE.grace_s, force_end)
    timer.daemon = True
    timer.start()
    if not STATE.federating:
        raise StopSignal(signum)


def stop_at_once_while_starting(package: str) -> None:
    """While ``python -m <package>.main`` imports its modules: end on a signal.

    Called from the package's ``__init__``, before any heavy import, so a
    Ctrl-C in the seconds Python spends importing Torch, Flower and Ray
    ends the program with one line instead of a ``KeyboardInterrupt``
    traceback. Any other process importing the package (a Ray worker, a
    test) is left alone. :func:`run_entry` replaces the handlers.
    """
    argv = list(getattr(sys, "orig_argv", []))
    entry = f"{package}.main"
    is_entry = any(pair == ("-m", entry) for pair in itertools.pairwise(argv))
    if not is_entry or threading.current_thread() is not threading.main_thread():
        return

    def end(signum: int, frame: Any) -> None:
        line = f"interrupted by {signal_name(signum)} while starting; nothing recorded"
        os.write(2, f"{line}\n".encode())
        os._exit(exit_status(signum))

    for signum in STOP_SIGNALS:
        signal.signal(signum, end)


def allow_grace(seconds: float) -> None:
    """Give the stop ``seconds`` before the forced end (a submitted run's stop)."""
    STATE.grace_s = float(seconds)


def received_signal() -> int | None:
    """The stop signal this process has received, if any."""
    return STATE.signum


def raise_if_stopped() -> None:
    """In the server's thread: raise :class:`RunStopped` once a signal came."""
    if STATE.stop.is_set() and STATE.signum is not None:
        raise RunStopped(STATE.signum)


@contextmanager
def federating() -> Iterator[None]:
    """Flower's engine runs in the main thread: signals only set the flag.

    Also keeps Ray's driver from replacing the SIGTERM handler at
    ``ray.init`` (with one that raises ``SystemExit(15)`` wherever the main
    thread is, inside Ray's or Flower's code).
    """
    if STATE.signum is not None:
        raise StopSignal(STATE.signum)
    STATE.federating = True
    try:
        with _ray_keeps_our_sigterm_handler():
            yield
    finally:
        STATE.federating = False


@contextmanager
def _ray_keeps_our_sigterm_handler() -> Iterator[None]:
    """Ray's driver leaves SIGTERM to us, in Python and in C++.

    Python: ``ray.init`` would install ``sys.exit(15)``. C++: the driver's
    core worker would install Abseil's failure-signal handler, which prints a
    stack dump on SIGTERM and aborts the process (status -6) if it still runs
    3 s later. Both only in this process; Ray's workers keep theirs.
    """
    import ray._private.ray_constants as ray_constants
    import ray._private.utils as ray_utils

    original = ray_utils.set_sigterm_handler
    dumps = ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER

    def keep_ours(handler: Callable[..., Any]) -> None:
        if signal.getsignal(signal.SIGTERM) is not _on_signal:
            original(handler)

    ray_utils.set_sigterm_handler = keep_ours
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = dumps


def stop_between_polls(grid: Any) -> None:
    """Let the in-memory grid give up waiting for replies once a signal came.

    ``InMemoryGrid.send_and_receive`` pushes the messages and then looks for
    replies every ``pull_interval`` until all came or ``timeout`` passed.
    This is the same loop (same pushes, same pulls, replies in the same
    order, so records are unchanged) that also raises :class:`RunStopped`
    between looks. Grids without ``pull_interval`` (deployment) are left
    alone; ``tests/test_stopping.py`` fails if Flower's loop changes.
    """
    if not hasattr(grid, "pull_interval"):
        return

    def send_and_receive(
        messages: Iterable[Any], *, timeout: float | None = None
    ) -> list[Any]:
        raise_if_stopped()
        waiting = set(grid.push_messages(messages))
        end_time = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Any] = []
        while timeout is None or time.time() < end_time:
            arrived = grid.pull_messages(waiting)
            replies.extend(arrived)
            waiting.difference_update({m.metadata.reply_to_message_id for m in arrived})
            if not waiting:
                break
            if STATE.stop.wait(grid.pull_interval or POLL_S):
                raise_if_stopped()
        return replies

    grid.send_and_receive = send_and_receive


# -- what the run tells the handlers ------------------------------------------


def expect_run(command: str) -> None:
    """A run (or sweep) is about to start; ``command`` resumes it."""
    STATE.resume_command = command


def watch(recorder: Any, *, checkpoint_known: bool = True) -> None:
    """The run in progress writes into ``recorder``.

    ``recorder`` needs ``rows``, ``out_dir``, ``config``, ``finished`` and
    ``write_summary`` (a :class:`~pflcore.records.results.RunRecorder`).
    """
    STATE.recorder = recorder
    STATE.checkpoint_known = checkpoint_known
    resumed = getattr(recorder, "resumed_from", None)
    STATE.checkpoint_round = None if resumed is None else int(resumed["round"])


def note_checkpoint(server_round: int) -> None:
    """The run in progress wrote its checkpoint of ``server_round``."""
    STATE.checkpoint_round = int(server_round)


def forget(recorder: Any) -> None:
    """``recorder``'s run is over (completed or failed): nothing to interrupt."""
    if STATE.recorder is recorder:
        STATE.recorder = None
        STATE.checkpoint_round = None


# -- the line and the exit ----------------------------------------------------


def stop_line(signum: int) -> str:
    """The one line that says what an interruption kept and how to resume."""
    name = signal_name(signum)
    recorder = STATE.recorder
    command = STATE.resume_command
    sweep = command is not None and is_multirun(command)
    if recorder is None:
        line = f"interrupted by {name} before the run started; nothing recorded"
        if sweep:
            line += f"; the finished runs are complete; resume the sweep: {command}"
        return line
    rounds = len(recorder.rows)
    line = (
        f"interrupted by {name} after {rounds} recorded round"
        f"{'' if rounds == 1 else 's'} (in {recorder.out_dir})"
    )
    if command is None:
        return line
    if sweep:
        return f"{line}; resume the sweep: {command}"
    if int(recorder.config.get("checkpoint_every", 0) or 0) <= 0:
        return f"{line}; no checkpoints (checkpoint_every=0): it cannot be resumed"
    if not STATE.checkpoint_known:
        return f"{line}; resume: {command}"
    last = STATE.checkpoint_round
    since = "the start" if last is None else f"the checkpoint of round {last}"
    return f"{line}; resume from {since}: {command}"


def mark_interrupted(signum: int) -> None:
    """Write ``interrupted`` into the summary of the run in progress, once."""
    recorder = STATE.recorder
    if recorder is not None and not recorder.finished:
        stopped = f"stopped by {signal_name(signum)}"
        recorder.write_summary(status="interrupted", error=stopped)


def announce(signum: int) -> None:
    """Print :func:`stop_line` on stderr, once, safely from any thread."""
    with STATE.lock:
        if STATE.announced:
            return
        STATE.announced = True
    os.write(2, f"{stop_line(signum)}\n".encode())


def force_end() -> None:
    """End the process now: summary, line, its processes killed, ``os._exit``."""
    signum = STATE.signum if STATE.signum is not None else int(signal.SIGINT)
    try:
        mark_interrupted(signum)
        announce(signum)
        end_processes(descendants(os.getpid()) - STATE.spared, wait_s=0.0)
    finally:
        os._exit(exit_status(signum))


def run_entry(main: Callable[[], Any]) -> None:
    """Run a package's Hydra ``main`` so that SIGINT and SIGTERM end it cleanly.

    The process ends with status 130 or 143 and :func:`stop_line`, never a
    traceback; the run's summary says ``interrupted``.
    """
    install_handlers()
    try:
        main()
    except StopSignal as stop:
        mark_interrupted(stop.signum)
        announce(stop.signum)
        sys.stdout.flush()
        raise SystemExit(exit_status(stop.signum)) from None


# -- the command that resumes ------------------------------------------------


def is_multirun(command: str) -> bool:
    """Whether ``command`` (from :func:`resume_command`) runs a Hydra sweep."""
    words = shlex.split(command)
    after = words[words.index("-m") + 2 :] if "-m" in words else words
    return "--multirun" in after or "-m" in after


def resume_command(folder_key: str, folder: str | Path) -> str:
    """The command line of this process, pointed at the folder it writes into.

    ``folder_key`` is ``hydra.run.dir`` (a run) or ``hydra.sweep.dir`` (a
    sweep): the same command into the same folder finishes what is there
    (:func:`pflcore.run.experiment.continue_in_place`): a completed run is left
    alone, an interrupted one resumes from its checkpoint. A command that
    already says ``resume=`` is given as it is.
    """
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    if any(w.startswith("resume=") for w in argv):
        return shlex.join(argv)
    setting = f"{folder_key}={Path(folder).resolve()}"
    given = [i for i, w in enumerate(argv) if w.startswith(f"{folder_key}=")]
    for i in given:
        argv[i] = setting
    return shlex.join(argv if given else [*argv, setting])


# -- processes ------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    """Every process's children, from ``/proc`` (empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # the command name (field 2) may hold spaces and parentheses
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(root: int) -> set[int]:
    """The pids of every process below ``root`` (not ``root`` itself)."""
    children = _children()
    found: set[int] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def end_processes(pids: set[int], wait_s: float) -> None:
    """SIGTERM ``pids``, give them ``wait_s`` seconds, SIGKILL what is left."""
    if wait_s > 0:
        for pid in pids:
            _send(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
    for pid in pids:
        _send(pid, signal.SIGKILL)


def _send(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"  # a zombie has ended; its parent has yet to reap it


@contextmanager
def ending_new_processes(wait_s: float = 3.0) -> Iterator[None]:
    """Whatever child processes appear inside the block are ended at its end.

    Around one run's federation: Ray's agents (``DashboardAgent``,
    ``RuntimeEnvAgent``) outlive ``ray.shutdown`` by seconds or more, and a
    sweep runs many federations in one process.
    """
    before = descendants(os.getpid())
    try:
        yield
    finally:
        left = descendants(os.getpid()) - before - STATE.spared
        if left:
            end_processes(left, wait_s)


_REAPER: subprocess.Popen[bytes] | None = None


def start_reaper() -> None:
    """Start, once per process, the watcher that outlives a killed run.

    ``pflcore/run/reaper.py`` notes this process's descendants while it runs and,
    once it is gone however it ended (``kill -9`` included), ends those still
    running. Only on Linux (it reads ``/proc``).
    """
    global _REAPER
    if _REAPER is not None or not Path("/proc/self/stat").exists():
        return
    script = Path(__file__).with_name("reaper.py")
    _REAPER = subprocess.Popen(
        [sys.executable, "-S", str(script), str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        close_fds=True,
    )
    STATE.spared.add(_REAPER.pid)
