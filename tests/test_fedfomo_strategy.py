"""FedFomo's server: epsilon schedule, candidate choice, affinity update, messages."""

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

from fedfomo.algorithm import (
    choose_candidates,
    cluster_clients,
    exploration_rate,
    initial_affinity,
    softmax_rows,
    update_affinity,
)
from fedfomo.strategy import FedFomo
from pflcore.records.results import RunRecorder


def test_epsilon_schedule():
    expected = {0: 0.3, 1: 0.25, 2: 0.2, 3: 0.15, 4: 0.1, 5: 0.05, 6: 0.0, 20: 0.0}
    for t, eps in expected.items():
        assert exploration_rate(t) == pytest.approx(eps, abs=1e-12)
    assert exploration_rate(2, initial=0.5, decay=0.1) == pytest.approx(0.3)


def test_affinity_starts_with_point_one_on_the_diagonal():
    p = initial_affinity(3)
    np.testing.assert_array_equal(p, [[0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]])


def test_affinity_update_by_hand():
    p = initial_affinity(3)
    # sum of weights 0.4: each entry moves by w / 0.4, negative ones included
    update_affinity(p, 0, [0, 2, 1], [0.3, -0.1, 0.2])
    np.testing.assert_allclose(p[0], [0.1 + 0.75, 0.5, -0.25])
    # a negative sum is normalised by its absolute value
    update_affinity(p, 1, [1, 2], [-0.2, -0.2])
    np.testing.assert_allclose(p[1], [0.0, 0.1 - 0.5, -0.5])
    # the global-average candidate (-1) counts in the sum but has no entry
    update_affinity(p, 2, [2, -1], [0.1, 0.3])
    np.testing.assert_allclose(p[2], [0.0, 0.0, 0.1 + 0.25])
    # all-zero weights: the 1e-9 floor avoids 0/0 and nothing moves
    before = p.copy()
    update_affinity(p, 0, [1, 2], [0.0, 0.0])
    np.testing.assert_array_equal(p, before)


def test_greedy_choice_follows_affinity_and_breaks_ties_at_random():
    row = np.array([9.0, 0.5, 0.2, 0.5, -1.0, 0.9])
    rng = np.random.default_rng(0)
    picks = choose_candidates(row, [0, 1, 2, 3, 4, 5], 0, 3, 0.0, rng)
    assert picks[0] == 5 and set(picks[1:]) == {1, 3}  # self (9.0) excluded
    firsts = {
        tuple(choose_candidates(row, [1, 2, 3, 4, 5], 0, 3, 0.0, rng))
        for _ in range(40)
    }
    assert firsts == {(5, 1, 3), (5, 3, 1)}  # the 0.5 tie goes both ways


def test_exploration_draws_uniformly_without_duplicates():
    row = np.array([0.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0])
    rng = np.random.default_rng(1)
    counts = np.zeros(8)
    for _ in range(2000):
        picks = choose_candidates(row, list(range(8)), 0, 2, 1.0, rng)
        assert len(picks) == len(set(picks)) == 2 and 0 not in picks
        counts[picks] += 1
    # 7 others, 2 slots: each is chosen with probability 2/7
    np.testing.assert_allclose(counts[1:] / 2000, 2 / 7, atol=0.04)


def test_choice_is_limited_to_the_pool():
    rng = np.random.default_rng(2)
    row = np.zeros(6)
    assert sorted(choose_candidates(row, [3, 4, 0], 0, 4, 0.2, rng)) == [3, 4]
    assert choose_candidates(row, [0], 0, 4, 0.2, rng) == []


def arrays(value: float) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(3, value, dtype=np.float32))})


def train_reply(pid: int, value: float) -> Message:
    metrics = MetricRecord({"num-examples": 10, "train-loss": 1.0, "partition-id": pid})
    return Message(
        RecordDict({"arrays": arrays(value), "metrics": metrics}),
        dst_node_id=0,
        message_type=MessageType.TRAIN,
    )


@pytest.fixture
def fomo(tmp_path) -> FedFomo:
    strategy = FedFomo(
        RunRecorder(tmp_path, {"seed": 0}),
        num_candidates=3,
        epsilon_initial=0.3,
        epsilon_decay=0.05,
        global_candidate=True,
        num_clients=4,
        clients_per_round=4,
        num_rounds=3,
        eval_every=0,
        seed=0,
    )
    strategy.bind_partitions({p: 100 + p for p in range(4)})
    strategy.note_sent(list(range(4)))
    strategy.aggregate_train(1, [train_reply(p, float(p)) for p in (2, 0, 3, 1)])
    return strategy


def test_one_message_per_client_with_its_own_and_m_minus_1_other_models(fomo):
    messages = list(fomo.configure_evaluate(1, ArrayRecord(), ConfigRecord(), None))
    assert [m.metadata.dst_node_id for m in messages] == [100, 101, 102, 103]
    for pid, message in enumerate(messages):
        records = message.content.array_records
        keys = [k for k in records if k.startswith("candidate-")]
        assert f"candidate-{pid}" in keys and len(keys) == 3
        for key in keys:  # each candidate is that client's upload
            np.testing.assert_array_equal(records[key]["w"].numpy(), int(key[10:]))
        # the global candidate: the sample-weighted mean (equal sizes) of 0..3
        np.testing.assert_allclose(records["global-average"]["w"].numpy(), 1.5)
        # round 1 of 3 with eval_every=0: update the baseline, test nothing
        assert message.metadata.message_type == "evaluate.fomo_update"


def test_replies_update_the_affinity_and_the_last_round_tests_everyone(fomo):
    fomo.configure_evaluate(1, ArrayRecord(), ConfigRecord(), None)
    replies = [
        Message(
            RecordDict(
                {
                    "metrics": MetricRecord(
                        {
                            "partition-id": pid,
                            "fomo-candidates": [pid, (pid + 1) % 4, -1],
                            "fomo-weights": [0.2, 0.2, -0.2],
                        }
                    )
                }
            ),
            dst_node_id=0,
            message_type=MessageType.EVALUATE,
        )
        for pid in range(4)
    ]
    assert fomo.aggregate_evaluate(1, replies) is None
    for pid in range(4):  # |sum| = 0.2: +1 to self and to the next client
        assert fomo.affinity[pid, pid] == pytest.approx(1.1)
        assert fomo.affinity[pid, (pid + 1) % 4] == pytest.approx(1.0)
    header, rows = fomo.round_tables()["affinity.csv"]  # the loop writes it
    assert header == ["partition_id", "p0", "p1", "p2", "p3"]
    assert rows[0] == [0, "1.1", "1", "0", "0"]  # P_00 = 0.1 + 1, P_01 = 0 + 1
    last = list(fomo.configure_evaluate(3, ArrayRecord(), ConfigRecord(), None))
    assert all(m.metadata.message_type == "evaluate.fomo_update_and_test" for m in last)


def test_exploration_generator_is_not_reseeded_each_round(tmp_path):
    def draws(strategy: FedFomo, rounds: int) -> list[list[int]]:
        return [
            choose_candidates(
                strategy.affinity[0], list(range(12)), 0, 4, 1.0, strategy.rng
            )
            for _ in range(rounds)
        ]

    def make() -> FedFomo:
        return FedFomo(
            RunRecorder(tmp_path, {"seed": 5}),
            num_candidates=5,
            epsilon_initial=0.3,
            epsilon_decay=0.05,
            num_clients=12,
            clients_per_round=12,
            num_rounds=3,
            eval_every=1,
            seed=5,
        )

    first = draws(make(), 4)
    assert len({tuple(d) for d in first}) > 1  # successive rounds differ
    assert draws(make(), 4) == first  # and the run is reproducible


def test_block_affinity_gives_the_blocks_as_clusters():
    # clients {0, 1, 2} like each other, {3, 4} like each other
    p = np.full((5, 5), -1.0)
    p[np.ix_([0, 1, 2], [0, 1, 2])] = 3.0
    p[np.ix_([3, 4], [3, 4])] = 3.0
    soft = softmax_rows(p)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    # row 0: three entries e^3, two e^-1
    np.testing.assert_allclose(soft[0, 0], np.e**3 / (3 * np.e**3 + 2 * np.e**-1))
    labels = cluster_clients(p, 2, seed=0)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4]


def sized_reply(pid: int, value: float, n: int) -> Message:
    metrics = MetricRecord({"num-examples": n, "train-loss": 1.0, "partition-id": pid})
    return Message(
        RecordDict({"arrays": arrays(value), "metrics": metrics}),
        dst_node_id=0,
        message_type=MessageType.TRAIN,
    )


def test_cluster_and_global_candidates_by_hand(tmp_path):
    strategy = FedFomo(
        RunRecorder(tmp_path, {"seed": 0}),
        num_candidates=2,
        epsilon_initial=0.0,
        epsilon_decay=0.05,
        global_candidate=True,
        num_clusters=2,
        num_clients=5,
        clients_per_round=5,
        num_rounds=3,
        eval_every=0,
        seed=0,
    )
    strategy.bind_partitions({p: 100 + p for p in range(5)})
    strategy.affinity[np.ix_([0, 1, 2], [0, 1, 2])] = 3.0
    strategy.affinity[np.ix_([3, 4], [3, 4])] = 3.0
    strategy.note_sent(list(range(5)))
    # values 0..4, sample counts 10, 20, 30, 40, 60
    sizes = [10, 20, 30, 40, 60]
    strategy.aggregate_train(
        1, [sized_reply(p, float(p), sizes[p]) for p in (4, 2, 0, 3, 1)]
    )
    # cluster {0,1,2}: (0*10 + 1*20 + 2*30) / 60 = 4/3
    # cluster {3,4}: (3*40 + 4*60) / 100 = 3.6
    means = sorted(float(m["w"].numpy()[0]) for m in strategy.cluster_averages)
    np.testing.assert_allclose(means, [4 / 3, 3.6], rtol=1e-6)
    message = next(
        iter(strategy.configure_evaluate(1, ArrayRecord(), ConfigRecord(), None))
    )
    records = message.content.array_records
    assert sorted(k for k in records if k.startswith("cluster-")) == [
        "cluster-0",
        "cluster-1",
    ]
    assert len([k for k in records if k.startswith("candidate-")]) == 2  # M = 2
    # the global model: the uniform mean of the two cluster models
    np.testing.assert_allclose(
        records["global-average"]["w"].numpy(), (4 / 3 + 3.6) / 2, rtol=1e-6
    )
    # extra candidates count in the normaliser, but add nothing to P
    before = strategy.affinity.copy()
    update_affinity(strategy.affinity, 0, [0, 1, -2, -3, -1], [0.2, 0.2, 0.4, 0.4, 0.8])
    np.testing.assert_allclose(strategy.affinity[0, :2], before[0, :2] + 0.2 / 2.0)
    np.testing.assert_array_equal(strategy.affinity[0, 2:], before[0, 2:])
