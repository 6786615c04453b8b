"""Named seed streams: each random draw of a run has its own, from the run seed.

A client's work in a round draws from ``derive_seed(seed, partition_id,
round, stream)`` (:func:`derive_seed`); local training uses the stream
without a tag, the shared ones are named here (:class:`Stream`) and a
package names its own beside the code that draws from them (FedPer's head
phase, Jiang et al.'s stages, pFedHN-PC's classifier), with tags other than
these. Client sampling draws from :func:`sampling_rng`. Partitioning draws
from ``seed + offset`` with the offsets named in each package's ``dataset``
module. The numbers are fixed: changing one changes every run's results.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """Tags of the shared per-round seed streams besides local training.

    Tags in use by packages: 2 (FedPer's head phase), 3 and 4 (Jiang et al.'s
    Reptile stage and personalization), 7 (pFedHN-PC's classifier).
    """

    ADAPT = 1  # evaluation-time adaptation (FedAvg + fine-tuning, Per-FedAvg's step)
    TUNING = 11  # a tuning run's split of each client's validation samples


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers."""
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
        >> 1
    )


def sampling_rng(seed: int, server_round: int) -> np.random.Generator:
    """The stream that draws the clients of ``server_round``: ``[seed, round]``."""
    return np.random.default_rng([int(seed), int(server_round)])
