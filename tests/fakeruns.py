"""Small hand-written run folders for the report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def partition(clients: int, variant: int = 0) -> str:
    """``partition.csv`` text: client j holds classes 0 and 1 (only 0 if j is odd).

    ``variant`` changes the training counts: another partition of the same clients.
    """
    lines = ["partition_id,split,c0,c1"]
    for j in range(clients):
        second = 0 if j % 2 else 5 + variant
        lines += [f"{j},train,5,{second}", f"{j},test,2,{2 if second else 0}"]
    return "\n".join(lines) + "\n"


def write_run(
    folder: Path,
    *,
    seed: int,
    correct: list[int],
    samples: list[int],
    partition_text: str | None = None,
    status: str = "completed",
    config: dict[str, Any] | None = None,
    before: list[float] | None = None,
    extra_summary: dict[str, Any] | None = None,
    round_: int = 5,
) -> Path:
    """A run folder whose last round evaluates ``len(correct)`` clients.

    Round 1 is also recorded (every client at 0 correct), so "last" must pick
    the right round.
    """
    folder.mkdir(parents=True, exist_ok=True)
    header = "round,partition_id,accuracy,loss,correct,num_samples"
    if before is not None:
        header += ",before_accuracy,before_loss"
    lines = [header]
    for rnd, counts in ((1, [0] * len(correct)), (round_, correct)):
        for pid, (c, n) in enumerate(zip(counts, samples, strict=True)):
            line = f"{rnd},{pid},{c / n!r},0.5,{c},{n}"
            if before is not None:
                line += f",{before[pid] if rnd == round_ else 0.0!r},0.7"
            lines.append(line)
    (folder / "clients.csv").write_text("\n".join(lines) + "\n")
    (folder / "rounds.csv").write_text(f"round,test_acc_mean\n1,0.0\n{round_},0.5\n")
    text = partition_text or partition(len(correct))
    (folder / "partition.csv").write_text(text)
    summary = {
        "status": status,
        "seed": seed,
        "rounds_completed": round_,
        "config": {"seed": seed, "num_rounds": round_, **(config or {})},
        **(extra_summary or {}),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return folder
