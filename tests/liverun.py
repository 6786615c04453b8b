"""A package's entry point running in its own session, watched while it runs.

:class:`LiveRun` starts ``python -m <module> ...`` as the leader of a new
session (so every process it starts, Ray's included, carries its session
id), passes its output into lists line by line, and notes every process
below it (pid and start time, read from ``/proc``) while it runs. After the
run, :meth:`LiveRun.leftovers` lists those processes, and any process of the
session, that still run: processes of other runs on the machine are never
counted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.mainrun import REPO


def _stat(pid: int) -> list[bytes] | None:
    """Fields 3.. of ``/proc/PID/stat`` (state, ppid, pgrp, session, ...)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks), None once it has ended (or is a zombie)."""
    fields = _stat(pid)
    return None if fields is None or fields[0] == b"Z" else int(fields[19])


def processes() -> dict[int, list[bytes]]:
    """Every live process's stat fields."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] != b"Z":
                found[int(entry)] = fields
    return found


def session_members(session: int) -> list[int]:
    """Live processes whose session id is ``session``."""
    return [pid for pid, f in processes().items() if int(f[3]) == session]


def below(root: int) -> set[int]:
    """Every live process below ``root``."""
    children: dict[int, list[int]] = {}
    for pid, fields in processes().items():
        children.setdefault(int(fields[1]), []).append(pid)
    found: set[int] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def command_of(pid: int) -> str:
    """The command line of ``pid`` (empty once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class LiveRun:
    """``python -m module *args`` in ``cwd``, in a session of its own.

    Attributes
    ----------
    stdout, stderr : list of str
        The lines written so far.
    noted : dict
        ``{pid: start time}`` of every process seen below the run.
    """

    def __init__(self, module: str, *args: str, cwd: Path) -> None:
        env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONPATH=str(REPO))
        self.command = [sys.executable, "-m", module, *args]
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.pid = self.process.pid
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.noted: dict[int, int] = {}
        self.signalled_at: float | None = None
        self.ended_at: float | None = None
        self._readers = [
            threading.Thread(target=self._read, args=(stream, into), daemon=True)
            for stream, into in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def _watch(self) -> None:
        while self.process.poll() is None:
            for pid in below(self.pid):
                started = start_time(pid)
                if started is not None:
                    self.noted.setdefault(pid, started)
            time.sleep(0.2)

    def output(self) -> str:
        """Everything written so far, stdout then stderr."""
        return "\n".join(self.stdout) + "\n" + "\n".join(self.stderr)

    def wait_for(self, what: Callable[[], bool], timeout: float = 600) -> None:
        """Wait until ``what()`` holds (fails if the run ends first)."""
        deadline = time.monotonic() + timeout
        while not what():
            if self.process.poll() is not None:
                raise AssertionError(f"the run ended first:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def saw(self, text: str) -> Callable[[], bool]:
        """A condition: ``text`` appeared in the output."""
        return lambda: any(text in line for line in self.stdout + self.stderr)

    def send(self, signum: int) -> None:
        """Send ``signum`` to the run's own process (not its session)."""
        self.signalled_at = time.monotonic()
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 900) -> int:
        """The exit status once the run's process has ended (output all read)."""
        code = self.process.wait(timeout=timeout)
        self.ended_at = time.monotonic()
        for reader in self._readers:
            reader.join(timeout=30)
        return code

    def seconds_to_exit(self) -> float:
        """From :meth:`send` to the end of the run's process."""
        assert self.signalled_at is not None and self.ended_at is not None
        return self.ended_at - self.signalled_at

    def leftovers(self, grace_s: float) -> list[str]:
        """Processes of this run still running ``grace_s`` s after it ended."""
        deadline = time.monotonic() + grace_s
        while True:
            alive = {
                pid for pid, started in self.noted.items() if start_time(pid) == started
            }
            alive |= set(session_members(self.pid))
            if not alive or time.monotonic() > deadline:
                return [f"{pid}: {command_of(pid)[:120]}" for pid in sorted(alive)]
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the run's whole session (test cleanup)."""
        for pid in session_members(self.pid) or [self.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
