"""Seeded client sampling by partition-id: one seed reproduces one run."""

from __future__ import annotations

import numpy as np


class ClientSampler:
    """Seeded sampling of partition-ids: one seed reproduces one run.

    Parameters
    ----------
    num_clients : int
        Population size.
    seed : int
        Run seed.
    """

    def __init__(self, num_clients: int, seed: int) -> None:
        self.num_clients = num_clients
        self.seed = seed

    def sample(self, server_round: int, count: int) -> list[int]:
        """Draw ``count`` distinct partition-ids for ``server_round`` (sorted)."""
        if count >= self.num_clients:
            return list(range(self.num_clients))
        rng = np.random.default_rng([self.seed, server_round])
        return sorted(rng.choice(self.num_clients, size=count, replace=False).tolist())
