"""How many torch threads a client uses, decided by the server per message.

Ray gives each client actor ``client_resources.num_cpus`` cores, and a round
that trains fewer clients than there are cores leaves the rest idle (pFedHN
trains one client per round). The server therefore says in each training
instruction how many threads the client may use (``num-threads``), and the
client sets them before it computes. More threads change the order of
floating-point reductions, so a run is bit-identical across machines only
with the same thread counts: ``client_threads`` fixes them.
"""

from __future__ import annotations

import os
from typing import Any

import torch

THREADS_KEY = "num-threads"  # in a train instruction: the client's torch threads


def train_threads(setting: int | str, clients_per_round: int, num_cpus: float) -> int:
    """Threads of each training client.

    Parameters
    ----------
    setting : int or "auto"
        ``client_threads``: a fixed count, or ``"auto"``: the machine's cores
        shared among the round's clients (never below ``num_cpus``).
    clients_per_round : int
        Clients that train at once.
    num_cpus : float
        ``client_resources.num_cpus``.

    Returns
    -------
    int
        At least 1.
    """
    if setting == "auto":
        cores = os.cpu_count() or 1
        return max(1, int(num_cpus), cores // max(1, clients_per_round))
    return max(1, int(setting))


def use_threads(instruction: Any, default: int) -> None:
    """Set torch's intra-op threads from a message's config (else ``default``)."""
    threads = instruction.get(THREADS_KEY, default) if instruction else default
    threads = max(1, int(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
