"""The seed streams: one key scheme, read by NumPy's SeedSequence, tags kept apart."""

from __future__ import annotations

import numpy as np
import pytest

from fedfomo.splits import SHARD_CLASSES_TAG, SHARD_CUT_TAG
from fedfomo.strategy import EXPLORATION_TAG
from fedper.client import HEAD_STREAM
from perfedavg.client import PERSONALIZE_STREAM, REPTILE_STREAM
from pflcore.config.seeds import Stream, derive_seed, sampling_rng, stream_rng


@pytest.mark.parametrize("key", [(0,), (3, 7), (2**32 - 1, 11, 2), (5, 0xF0F0)])
def test_a_streams_generator_is_pcg64_on_the_seed_sequence_of_its_key(key):
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))
    assert np.array_equal(
        stream_rng(*key).integers(0, 2**62, 8), expected.integers(0, 2**62, 8)
    )


@pytest.mark.parametrize("key", [(0, 0), (3, 4, 5), (2**32 - 1, 9, 1000, 1)])
def test_a_streams_integer_seed_reads_the_same_key(key):
    word = np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0]
    seed = derive_seed(*key)
    assert seed == int(word) >> 1
    assert 0 <= seed < 2**63


def test_the_sampling_stream_is_keyed_by_seed_and_round():
    expected = np.random.default_rng(np.random.SeedSequence([4, 12]))
    assert np.array_equal(sampling_rng(4, 12).random(5), expected.random(5))


def test_streams_with_different_tags_differ():
    draws = {tag: tuple(stream_rng(1, tag).integers(0, 2**62, 4)) for tag in range(64)}
    assert len(set(draws.values())) == 64


def test_the_per_round_tags_in_use_are_distinct():
    # keyed (seed, partition, round, tag): two users of one tag would share draws
    tags = [*Stream, HEAD_STREAM, REPTILE_STREAM, PERSONALIZE_STREAM]
    assert len(set(map(int, tags))) == len(tags)


def test_fedfomos_shard_and_exploration_tags_are_distinct():
    assert len({SHARD_CLASSES_TAG, SHARD_CUT_TAG, EXPLORATION_TAG}) == 3
