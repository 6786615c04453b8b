"""One progress line per round on the terminal, throttled for long runs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any


class ProgressPrinter:
    """Print round, latest mean accuracy, elapsed time and time left.

    A line is printed for the first and the last round, and otherwise at most
    once every ``min_interval_s`` seconds, so a 5000-round run prints a few
    hundred lines, not 5000.

    Parameters
    ----------
    num_rounds : int
        Rounds in the run (for the estimate of the time left).
    min_interval_s : float
        Least time between two printed lines (0 prints every round).
    clock : callable
        Monotonic clock in seconds (replaceable in tests).
    write : callable
        Where a line goes.
    """

    def __init__(
        self,
        num_rounds: int,
        min_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], Any] = lambda line: print(line, flush=True),
    ) -> None:
        self.num_rounds = num_rounds
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.write = write
        self._last_print: float | None = None
        self._acc: tuple[int, float] | None = None
        self._start = clock()
        self._first: tuple[int, float] | None = (
            None  # (round, clock) of the first update
        )

    def update(
        self,
        server_round: int,
        row: dict[str, Any],
        *,
        prefix: str = "",
        note: str = "",
    ) -> str | None:
        """Take one finished round's ``rounds.csv`` row; return the line if printed.

        ``prefix`` names a stage (e.g. ``"reptile"``), ``note`` is appended
        after the accuracy (e.g. the accuracy before adaptation).
        """
        acc = row.get("test_acc_mean")
        if acc is not None:
            self._acc = (server_round, float(acc))
        now = self.clock()
        if self._first is None:
            self._first = (server_round, now)
        due = (
            self._last_print is None
            or server_round >= self.num_rounds
            or now - self._last_print >= self.min_interval_s
        )
        if not due:
            return None
        self._last_print = now
        line = self.format(server_round, row, now, prefix=prefix, note=note)
        self.write(line)
        return line

    def format(
        self,
        server_round: int,
        row: dict[str, Any],
        now: float,
        *,
        prefix: str = "",
        note: str = "",
    ) -> str:
        """The progress line for ``row`` (the latest evaluated accuracy is shown).

        The time left extrapolates this printer's own rounds (a later stage
        of a multi-stage run is not charged for the earlier stages), counted
        from the first round it was given: round 1 of a run also carries the
        start of Ray and of the clients, which later rounds do not repeat, so
        its line shows no estimate (``left ~?``).
        """
        elapsed = float(row["time_s"])
        first_round, first_time = self._first or (server_round, now)
        if server_round > first_round:
            per_round = (now - first_time) / (server_round - first_round)
        elif server_round > 1:  # first line of a printer that missed round 1
            per_round = (now - self._start) / server_round
        else:
            per_round = None
        if per_round is None:
            left_text = "?"
        else:
            left_text = _clock(per_round * (self.num_rounds - server_round))
        if self._acc is None:
            acc_text = "acc   --  (not evaluated yet)"
        else:
            acc_round, acc = self._acc
            acc_text = f"acc {acc:.4f} (round {acc_round})"
        if note:
            acc_text += f" {note}"
        loss = row.get("train_loss")
        finite = isinstance(loss, (int, float)) and math.isfinite(loss)
        loss_text = f"loss {loss:.4f}" if finite else "loss --"
        stage = f"{prefix} " if prefix else ""
        width = len(str(self.num_rounds))
        return (
            f"[{stage}round {server_round:>{width}}/{self.num_rounds}] "
            f"{acc_text}  {loss_text}  elapsed {_clock(elapsed)}  left ~{left_text}"
        )


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
