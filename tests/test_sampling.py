"""One client sampler for every strategy, with or without a held-out pool."""

from __future__ import annotations

import numpy as np
import pytest

from pflcore.fl.sampling import ClientSampler


@pytest.mark.parametrize("pool", [[0, 2, 5, 7, 9], list(range(1, 50, 3)), [4]])
@pytest.mark.parametrize("count", [1, 3, 10])
def test_a_pool_draw_is_numpys_choice_over_the_pool(pool, count):
    for seed in range(5):
        for server_round in range(1, 8):
            rng = np.random.default_rng([seed, server_round])
            size = min(count, len(pool))
            expected = sorted(int(j) for j in rng.choice(pool, size, replace=False))
            drawn = ClientSampler(50, seed).sample(server_round, count, pool)
            assert drawn == expected


def test_without_a_pool_every_partition_may_be_drawn():
    sampler = ClientSampler(10, seed=3)
    rng = np.random.default_rng([3, 7])
    assert sampler.sample(7, 4) == sorted(rng.choice(10, 4, replace=False).tolist())
    assert sampler.sample(7, 10) == list(range(10))
