"""FedFomo's messages: the candidate models a client weighs, and what it reports.

Server to client: a train message carries one ``ArrayRecord`` per candidate
model besides the client's own, keyed :func:`candidate_key` (another client's
model), :data:`GLOBAL_KEY` (the global average) or :func:`cluster_key` (a
cluster's average). An evaluate message's type says what the client does
(:func:`evaluate_type`): ``evaluate`` tests its stored baseline,
``evaluate.fomo_update`` first moves the baseline from the candidates, and
``evaluate.fomo_update_and_test`` does both, in that order.

Client to server: a train reply's metrics name the candidates the client
weighed and their weights (:func:`fomo_weights_metrics`, read with
:func:`fomo_weights_of`). Everything else is the shared protocol
(:mod:`pflcore.fl.protocol`).
"""

from __future__ import annotations

from typing import Any

from flwr.app import MessageType, MetricRecord

from pflcore.fl.protocol import ProtocolError, number_list

# one ArrayRecord per candidate model in a train message
CANDIDATE_PREFIX = "candidate-"
GLOBAL_KEY = "global-average"
GLOBAL_ID = -1  # the global model's candidate id (adds nothing to the affinities)
CLUSTER_PREFIX = "cluster-"
FOMO_CANDIDATES = "fomo-candidates"
FOMO_WEIGHTS = "fomo-weights"
# Flower message actions of the evaluate phase (category "evaluate")
FOMO_UPDATE = "fomo_update"
FOMO_UPDATE_AND_TEST = "fomo_update_and_test"


def evaluate_type(update: bool, test: bool) -> str:
    """The message type of an evaluate message that updates and/or tests.

    Raises
    ------
    ValueError
        If it does neither (the client then gets no message).
    """
    if not (update or test):
        raise ValueError("an evaluate message must update, test or both")
    if not update:
        return MessageType.EVALUATE
    action = FOMO_UPDATE_AND_TEST if test else FOMO_UPDATE
    return f"{MessageType.EVALUATE}.{action}"


def candidate_key(pid: int) -> str:
    """The array-record key of client ``pid``'s model sent as a candidate."""
    return f"{CANDIDATE_PREFIX}{pid}"


def cluster_key(k: int) -> str:
    """The array-record key of cluster ``k``'s average model."""
    return f"{CLUSTER_PREFIX}{k}"


def cluster_id(k: int) -> int:
    """The candidate id FedFomo's affinity bookkeeping gives cluster ``k``.

    Client ids are ``0..N-1`` and the global model is ``-1``; cluster ``k``
    is ``-2 - k``, so every candidate has one integer id and negative ids are
    never clients.
    """
    return -2 - int(k)


def is_candidate_key(key: str) -> bool:
    """Whether an array-record key of a FedFomo message names a candidate."""
    return key == GLOBAL_KEY or key.startswith((CANDIDATE_PREFIX, CLUSTER_PREFIX))


def candidate_id(key: str) -> int:
    """The integer id of a candidate's array-record key (inverse of the builders)."""
    if key == GLOBAL_KEY:
        return GLOBAL_ID
    if key.startswith(CLUSTER_PREFIX):
        return cluster_id(int(key[len(CLUSTER_PREFIX) :]))
    if key.startswith(CANDIDATE_PREFIX):
        return int(key[len(CANDIDATE_PREFIX) :])
    raise ProtocolError(f"{key!r} is not a candidate key")


def fomo_weights_metrics(ids: list[int], weights: list[float]) -> dict[str, Any]:
    """The metric entries naming the candidates a FedFomo client weighed."""
    return {
        FOMO_CANDIDATES: [int(i) for i in ids],
        FOMO_WEIGHTS: [float(w) for w in weights],
    }


def fomo_weights_of(record: MetricRecord) -> tuple[list[int], list[float]] | None:
    """``(candidate ids, weights)`` a FedFomo train reply holds, or ``None``."""
    if FOMO_WEIGHTS not in record:
        return None
    ids = [int(i) for i in number_list(record, FOMO_CANDIDATES)]
    return ids, number_list(record, FOMO_WEIGHTS)
