"""Seeded client sampling by partition-id: one seed reproduces one run."""

from __future__ import annotations

from pflcore.config.seeds import sampling_rng


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

    def sample(
        self, server_round: int, count: int, pool: list[int] | None = None
    ) -> list[int]:
        """Draw ``count`` distinct partition-ids for ``server_round`` (sorted).

        From ``pool`` (e.g. the clients that train while others are held out)
        or, by default, from every partition. The draw is the
        :func:`~pflcore.config.seeds.sampling_rng` stream's: the i-th of a
        pool is drawn exactly when i is drawn from ``range(len(pool))``.
        """
        population = list(range(self.num_clients)) if pool is None else list(pool)
        if count >= len(population):
            return sorted(population)
        rng = sampling_rng(self.seed, server_round)
        drawn = rng.choice(len(population), size=count, replace=False)
        return sorted(population[int(i)] for i in drawn)
