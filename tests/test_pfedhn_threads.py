"""Threads per training client: all the cores for a lone client, fixed on request."""

import os

import torch

from pfedhn.threads import THREADS_KEY, train_threads, use_threads


def test_a_lone_client_gets_every_core_and_many_share_them():
    cores = os.cpu_count() or 1
    assert train_threads("auto", 1, 1) == cores
    assert train_threads("auto", 4 * cores, 1) == 1  # never below one
    assert train_threads("auto", 4 * cores, 2) == 2  # nor below num_cpus
    assert train_threads(3, 1, 1) == 3  # a fixed count wins


def test_use_threads_follows_the_message_then_the_default():
    before = torch.get_num_threads()
    try:
        use_threads({THREADS_KEY: 2, "server-round": 1}, default=1)
        assert torch.get_num_threads() == 2
        use_threads({"server-round": 1}, default=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
