"""Named seed streams: each random draw of a run has its own, from the run seed.

A stream is a key: the run seed followed by integer tags. NumPy's
``SeedSequence`` reads the key; :func:`stream_rng` gives the stream's NumPy
generator and :func:`derive_seed` its 63-bit integer (for torch generators).
A client's work in a round draws from ``derive_seed(seed, partition_id,
round, tag)``; local training uses the key without a tag, the shared tags
are named here (:class:`Stream`) and a package names its own beside the
code that draws from them (FedPer's head phase, Jiang et al.'s stages,
pFedHN-PC's classifier, FedFomo's shards and exploration), with tags other
than these. Client sampling draws from :func:`sampling_rng`.

Partition functions take one integer seed: the package passes ``seed +
offset``, with the offsets named in its ``dataset`` module. That is the one
older form kept: the offsets define every recorded partition (and its
digest), so moving them onto keys would change every committed record. All
numbers here are fixed for the same reason.
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


def stream_rng(seed: int, *tags: int) -> np.random.Generator:
    """The NumPy generator of the stream keyed ``[seed, *tags]``."""
    return np.random.default_rng([int(seed), *(int(t) for t in tags)])


def sampling_rng(seed: int, server_round: int) -> np.random.Generator:
    """The stream that draws the clients of ``server_round``: ``[seed, round]``."""
    return stream_rng(seed, server_round)
