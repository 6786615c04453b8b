"""Server side: weighted averaging, FedPer's base-only aggregation, sampling."""

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from fedper.strategy import FedPer
from pflcore.fl.protocol import ClientError
from pflcore.fl.sampling import ClientSampler
from pflcore.fl.strategy import PartitionStrategy, weighted_average
from pflcore.records.results import RunRecorder


def record(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def reply(arrays: ArrayRecord, n: int, loss: float, pid: int) -> Message:
    metrics = MetricRecord({"num-examples": n, "train-loss": loss, "partition-id": pid})
    return Message(
        RecordDict({"arrays": arrays, "metrics": metrics}),
        dst_node_id=0,
        message_type=MessageType.TRAIN,
    )


def test_weighted_average_equals_hand_computed_mean():
    a = record(w=np.array([1.0, 2.0], dtype=np.float32), n=np.array(10, dtype=np.int64))
    b = record(
        w=np.array([4.0, -1.0], dtype=np.float32), n=np.array(21, dtype=np.int64)
    )
    out = weighted_average([a, b], [1.0, 2.0])
    # (1*[1,2] + 2*[4,-1]) / 3 = [3, 0];  (10 + 42) / 3 = 17.33 -> 17
    np.testing.assert_allclose(out["w"].numpy(), [3.0, 0.0], rtol=1e-7)
    assert out["w"].numpy().dtype == np.float32
    assert out["n"].numpy().dtype == np.int64 and out["n"].numpy().shape == ()
    assert int(out["n"].numpy()) == 17


def test_weighted_average_rejects_mismatched_keys_and_zero_weights():
    with pytest.raises(ValueError, match="different array keys"):
        weighted_average([record(a=np.ones(1)), record(b=np.ones(1))], [1, 1])
    with pytest.raises(ValueError, match="positive sum"):
        weighted_average([record(a=np.ones(1))], [0.0])


@pytest.fixture
def fedper(tmp_path) -> FedPer:
    strategy = FedPer(
        RunRecorder(tmp_path, {"seed": 0}),
        base_keys=["base.w"],
        num_clients=3,
        clients_per_round=3,
        num_rounds=2,
        eval_every=1,
        seed=0,
    )
    strategy.bind_partitions({0: 100, 1: 101, 2: 102})
    return strategy


def test_fedper_averages_the_base_weighted_by_sample_counts(fedper):
    messages = list(
        fedper.configure_train(
            1, record(**{"base.w": np.zeros(2, np.float32)}), ConfigRecord(), None
        )
    )
    assert sorted(m.metadata.dst_node_id for m in messages) == [100, 101, 102]
    replies = [
        reply(record(**{"base.w": np.array([1.0, 0.0], np.float32)}), 10, 1.0, 0),
        reply(record(**{"base.w": np.array([0.0, 1.0], np.float32)}), 30, 2.0, 1),
        reply(record(**{"base.w": np.array([2.0, 2.0], np.float32)}), 60, 3.0, 2),
    ]
    arrays, metrics = fedper.aggregate_train(1, replies)
    # gamma = (0.1, 0.3, 0.6): [0.1 + 1.2, 0.3 + 1.2]
    np.testing.assert_allclose(arrays["base.w"].numpy(), [1.3, 1.5], rtol=1e-6)
    assert list(arrays.keys()) == ["base.w"]
    assert metrics["train-loss"] == pytest.approx(0.1 * 1 + 0.3 * 2 + 0.6 * 3)


def test_fedper_rejects_a_reply_that_carries_personal_layers(fedper):
    list(
        fedper.configure_train(
            1, record(**{"base.w": np.zeros(1)}), ConfigRecord(), None
        )
    )
    leaky = reply(record(**{"base.w": np.zeros(1), "head.w": np.ones(1)}), 5, 1.0, 0)
    with pytest.raises(ClientError, match=r"head\.w"):
        fedper.aggregate_train(1, [leaky] * 3)


def test_missing_replies_are_an_error_not_a_smaller_average(fedper):
    list(
        fedper.configure_train(
            1, record(**{"base.w": np.zeros(1)}), ConfigRecord(), None
        )
    )
    with pytest.raises(ClientError, match="2 of 3"):
        fedper.aggregate_train(
            1, [reply(record(**{"base.w": np.zeros(1)}), 5, 1.0, 0)] * 2
        )


def test_local_training_sends_and_aggregates_nothing(tmp_path):
    strategy = FedPer(
        RunRecorder(tmp_path, {}),
        base_keys=[],
        num_clients=2,
        clients_per_round=2,
        num_rounds=1,
        eval_every=1,
        seed=0,
    )
    strategy.bind_partitions({0: 1, 1: 2})
    list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None))
    arrays, _ = strategy.aggregate_train(
        1, [reply(ArrayRecord(), 4, 0.5, 0), reply(ArrayRecord(), 6, 1.0, 1)]
    )
    assert len(arrays) == 0


def test_sampler_is_seeded_and_partial_participation_is_honoured(tmp_path):
    sampler = ClientSampler(10, seed=3)
    assert sampler.sample(5, 4) == ClientSampler(10, seed=3).sample(5, 4)
    draws = {tuple(sampler.sample(r, 4)) for r in range(1, 30)}
    assert len(draws) > 10 and all(len(set(d)) == 4 for d in draws)
    assert sampler.sample(1, 10) == list(range(10))
    strategy = PartitionStrategy(
        RunRecorder(tmp_path, {}),
        num_clients=10,
        clients_per_round=4,
        num_rounds=3,
        eval_every=0,
        seed=3,
    )
    strategy.bind_partitions({p: 1000 + p for p in range(10)})
    messages = list(strategy.configure_train(2, ArrayRecord(), ConfigRecord(), None))
    assert sorted(m.metadata.dst_node_id - 1000 for m in messages) == sampler.sample(
        2, 4
    )


def test_evaluation_cadence(tmp_path):
    strategy = PartitionStrategy(
        RunRecorder(tmp_path, {}),
        num_clients=2,
        clients_per_round=2,
        num_rounds=7,
        eval_every=3,
        seed=0,
    )
    strategy.bind_partitions({0: 1, 1: 2})
    evaluated = [
        r
        for r in range(1, 8)
        if list(strategy.configure_evaluate(r, ArrayRecord(), ConfigRecord(), None))
    ]
    assert evaluated == [3, 6, 7]


def test_replies_are_read_in_partition_order_whatever_order_they_arrive_in(tmp_path):
    strategy = PartitionStrategy(
        RunRecorder(tmp_path, {}),
        num_clients=3,
        clients_per_round=3,
        num_rounds=1,
        eval_every=0,
        seed=0,
    )
    strategy.bind_partitions({0: 30, 1: 10, 2: 20})
    values = {0: 0.1, 1: 0.7, 2: 1e-8}
    sums = []
    for arrival in ([2, 0, 1], [1, 2, 0], [0, 1, 2]):
        sent = strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None)
        pid_of = {node: pid for pid, node in strategy.node_of.items()}
        by_pid = {pid_of[m.metadata.dst_node_id]: m for m in sent}
        replies = [
            Message(
                RecordDict(
                    {
                        "arrays": record(w=np.array([values[pid]], np.float32)),
                        "metrics": MetricRecord(
                            {"num-examples": 1, "train-loss": 0.0, "partition-id": pid}
                        ),
                    }
                ),
                reply_to=by_pid[pid],
            )
            for pid in arrival
        ]
        contents = strategy.check_replies(replies, 3, "training", 1)
        assert [c.metric_records["metrics"]["partition-id"] for c in contents] == [
            0,
            1,
            2,
        ]
        arrays, _ = strategy.aggregate_train(1, replies)
        sums.append(arrays["w"].numpy().tobytes())
    assert sums[0] == sums[1] == sums[2]
