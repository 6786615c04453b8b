"""Optional mirrors of ``rounds.csv`` in experiment trackers (off by default).

One setting, shared by every package, turns a mirror on:

* ``tracking=tensorboard``: TensorBoard event files in ``<run folder>/tensorboard``,
  written offline (``tensorboard --logdir outputs`` shows them); needs the
  ``tensorboard`` package (``pip install -e ".[tracking]"``).
* ``tracking=wandb``: a Weights & Biases run in offline mode
  (``WANDB_MODE=offline``) in ``<run folder>/wandb`` (``wandb sync`` uploads it
  later, if wanted); needs the ``wandb`` package, which the suite never
  requires.

Each round's ``rounds.csv`` row is logged as it is written, with the row's
``round`` as the step and one scalar per numeric column of the same name;
empty and NaN cells (e.g. the loss of a round without training) are left
out, as a tracker has no "missing" value.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Protocol

from pflcore.config.trackers import check_tracking


def round_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite cells of a ``rounds.csv`` row, ``round`` excluded."""
    out = {}
    for key, value in row.items():
        if key == "round" or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            out[key] = float(value)
    return out


class Tracker(Protocol):
    """Where a run's round rows are mirrored."""

    def log_round(self, row: dict[str, Any]) -> None:
        """Log one ``rounds.csv`` row (its ``round`` is the step)."""

    def close(self) -> None:
        """Flush and release the tracker (the run has ended)."""


class TensorBoardTracker:
    """TensorBoard event files in ``<out_dir>/tensorboard``, flushed every round."""

    def __init__(self, out_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = out_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_round(self, row: dict[str, Any]) -> None:
        """Write one scalar per column at step ``row["round"]``."""
        step = int(row["round"])
        for tag, value in round_scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # a crash keeps every round written so far

    def close(self) -> None:
        """Close the event file."""
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run in offline mode, in ``<out_dir>/wandb``."""

    def __init__(self, out_dir: Path, config: dict[str, Any]) -> None:
        os.environ["WANDB_MODE"] = "offline"  # never reach the network
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.run = wandb.init(
            project="pfl-suite",
            name=out_dir.name,
            dir=str(out_dir),
            config=config,
            mode="offline",
        )

    def log_round(self, row: dict[str, Any]) -> None:
        """Log the row's scalars at step ``row["round"]``."""
        self.run.log(round_scalars(row), step=int(row["round"]))

    def close(self) -> None:
        """Finish the offline run (its files stay in the run folder)."""
        self.run.finish()


def make_tracker(
    name: str | None, out_dir: Path, config: dict[str, Any]
) -> Tracker | None:
    """The tracker the ``tracking`` setting asks for (``None`` for ``none``).

    Raises
    ------
    ConfigError
        As :func:`check_tracking`.
    """
    kind = check_tracking(name)
    if kind == "tensorboard":
        return TensorBoardTracker(out_dir)
    if kind == "wandb":
        return WandbTracker(out_dir, config)
    return None
