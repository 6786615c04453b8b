"""FedFomo's messages: candidate keys and ids, and the weights a client reports."""

from __future__ import annotations

import pytest
from flwr.app import MetricRecord

from fedfomo.messages import (
    GLOBAL_ID,
    GLOBAL_KEY,
    candidate_id,
    candidate_key,
    cluster_id,
    cluster_key,
    fomo_weights_metrics,
    fomo_weights_of,
    is_candidate_key,
)
from pflcore.fl.protocol import ProtocolError


def test_candidate_keys_and_ids_are_inverse_and_disjoint():
    assert candidate_id(candidate_key(4)) == 4
    assert candidate_id(cluster_key(0)) == cluster_id(0) == -2
    assert candidate_id(cluster_key(3)) == -5
    assert candidate_id(GLOBAL_KEY) == GLOBAL_ID == -1
    ids = [candidate_id(candidate_key(i)) for i in range(10)]
    ids += [candidate_id(cluster_key(k)) for k in range(10)] + [GLOBAL_ID]
    assert len(set(ids)) == len(ids)  # clients, clusters and the global never collide
    assert all(
        is_candidate_key(k) for k in (candidate_key(0), cluster_key(1), GLOBAL_KEY)
    )
    assert not is_candidate_key("arrays")
    with pytest.raises(ProtocolError):
        candidate_id("arrays")


def test_fomo_weights_round_trip():
    m = MetricRecord(fomo_weights_metrics([2, -1, -3], [0.5, 0.0, 0.25]))
    assert fomo_weights_of(m) == ([2, -1, -3], [0.5, 0.0, 0.25])
    assert fomo_weights_of(MetricRecord({"partition-id": 0})) is None
