"""Ends what a run started once the run's process is gone, ``kill -9`` included.

``python -S pflcore/run/reaper.py PID`` (started by
:func:`pflcore.run.stopping.start_reaper`, a child of run process ``PID``): while
``PID`` runs, note every process below it every :data:`POLL_S` seconds (pid
and start time, so a reused pid is never mistaken for one of them). Once
``PID`` is gone, however it ended, SIGTERM the noted processes still running
and every process below them, SIGKILL what is left after
:data:`TERM_WAIT_S` seconds, and exit.

Ray's head processes end with a killed driver, but the processes below them
(``DashboardAgent``, ``RuntimeEnvAgent``, idle workers) do not; and Flower's
managed SuperLink, detached by ``flwr run``, never does. Only processes that
were below ``PID`` are touched: other runs on the machine, their Ray
clusters included, are not.

Standard library only, run with ``-S``: it starts in a few milliseconds and
imports nothing of the suite. SIGINT, SIGTERM and SIGHUP are ignored, so the
signal that stops a run from a terminal does not stop its reaper first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

POLL_S = 0.5
TERM_WAIT_S = 2.0


def stat_fields(pid: int) -> list[bytes] | None:
    """Fields 3.. of ``/proc/PID/stat`` (state, ppid, ...), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses
    return stat[stat.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), None if it is gone."""
    fields = stat_fields(pid)
    return None if fields is None or fields[0] == b"Z" else int(fields[19])


def children() -> dict[int, list[int]]:
    """Every process's children."""
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None:
                found.setdefault(int(fields[1]), []).append(int(entry))
    return found


def below(roots: list[int]) -> set[int]:
    """Every process below ``roots`` (not the roots)."""
    tree = children()
    found: set[int] = set()
    todo = [c for r in roots for c in tree.get(r, [])]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(tree.get(pid, []))
    return found


def still_running(noted: dict[int, int]) -> set[int]:
    """The noted processes that still run (same pid, same start time)."""
    return {pid for pid, started in noted.items() if start_time(pid) == started}


def end(pids: set[int]) -> None:
    """SIGTERM ``pids``, wait up to :data:`TERM_WAIT_S`, SIGKILL the rest."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        if signum == signal.SIGKILL:
            return
        deadline = time.monotonic() + TERM_WAIT_S
        while time.monotonic() < deadline:
            pids = {p for p in pids if start_time(p) is not None}
            if not pids:
                return
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    """Watch run process ``argv[1]``, then end what it left."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    run = int(argv[1])
    me = os.getpid()
    noted: dict[int, int] = {}
    while os.getppid() == run:  # once the run is gone, another process adopts us
        for pid in below([run]) - {me} - set(noted):
            started = start_time(pid)
            if started is not None:
                noted[pid] = started
        time.sleep(POLL_S)
    running = still_running(noted)
    running |= below(sorted(running)) - {me}
    if running:
        end(running)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
