"""Named seed streams: each random draw of a run has its own, from the run seed.

A client's work in a round draws from ``derive_seed(seed, partition_id,
round, stream)`` (:func:`pflcore.config.seeds.derive_seed`); local training
uses the stream without a tag, the others are named here. Partitioning draws
from ``seed + offset`` with the offsets named in each package's ``dataset``
module. The numbers are fixed: changing one changes every run's results.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """Tags of a client's per-round seed streams besides local training."""

    ADAPT = 1  # evaluation-time adaptation (FedAvg + fine-tuning, Per-FedAvg's step)
    HEAD = 2  # FedPer's head fine-tuning phase (paper App. A.3)
    REPTILE = 3  # Jiang et al.'s Reptile stage
    PERSONALIZE = 4  # Jiang et al.'s personalization evaluation
    PC_HEAD_INIT = 7  # pFedHN-PC's per-client classifier (seeded once, no round)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers."""
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
        >> 1
    )


def sampling_rng(seed: int, server_round: int) -> np.random.Generator:
    """The stream that draws the clients of ``server_round``: ``[seed, round]``."""
    return np.random.default_rng([int(seed), int(server_round)])
