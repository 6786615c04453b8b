"""The shared strategy keeps Flower's contract: hooks return, the loop records.

A fake grid answers each message in process: client ``p`` trains by adding
``p + 1`` to every weight (and reports ``p + 1`` samples and loss ``p``), and
evaluates with ``p + 1`` correct of ``10``. Every number checked below is
worked out by hand from those rules.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from pflcore.fl.strategy import PartitionStrategy, ServerState
from pflcore.records.results import RunRecorder

WEIGHTS = np.zeros(4, dtype=np.float32)  # 16 bytes


class AnsweringGrid:
    """Replies at once, in reverse order (the loop must not depend on it)."""

    def __init__(self, node_to_pid: dict[int, int]) -> None:
        self.pid_of = node_to_pid

    def send_and_receive(
        self, messages: Iterable[Message], timeout: float | None = None
    ) -> list[Message]:
        return [self.answer(m) for m in reversed(list(messages))]

    def answer(self, msg: Message) -> Message:
        pid = self.pid_of[msg.metadata.dst_node_id]
        if msg.metadata.message_type == MessageType.TRAIN:
            w = msg.content.array_records["arrays"]["w"].numpy() + (pid + 1)
            metrics = {"partition-id": pid, "num-examples": pid + 1, "train-loss": pid}
            content = RecordDict(
                {
                    "arrays": ArrayRecord({"w": Array(w.astype(np.float32))}),
                    "metrics": MetricRecord(metrics),
                }
            )
        else:
            metrics = {
                "partition-id": pid,
                "correct": pid + 1,
                "loss-sum": 0.5 * (pid + 1),
                "num-examples": 10,
            }
            content = RecordDict({"metrics": MetricRecord(metrics)})
        return Message(content, reply_to=msg)


def strategy(tmp_path, **kwargs) -> PartitionStrategy:
    s = PartitionStrategy(
        RunRecorder(tmp_path, {"seed": 0}),
        num_clients=3,
        clients_per_round=3,
        num_rounds=2,
        eval_every=1,
        seed=0,
        **kwargs,
    )
    s.bind_partitions({0: 10, 1: 11, 2: 12})
    return s


def rows(path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_start_records_what_the_hooks_return(tmp_path):
    s = strategy(tmp_path)
    grid = AnsweringGrid({10: 0, 11: 1, 12: 2})
    initial = ArrayRecord({"w": Array(WEIGHTS)})
    result = s.start(grid, initial, timeout=1.0)
    # samples-weighted: (1*1 + 2*2 + 3*3) / 6 = 14/6 added per round
    np.testing.assert_allclose(result.arrays["w"].numpy(), 2 * 14 / 6, rtol=1e-6)
    # the train loss: (0*1 + 1*2 + 2*3) / 6
    assert result.train_metrics_clientapp[1]["train-loss"] == 8 / 6
    assert result.evaluate_metrics_clientapp[2]["accuracy-mean"] == np.mean(
        [0.1, 0.2, 0.3]
    )
    written = rows(tmp_path / "rounds.csv")
    assert [r["round"] for r in written] == ["1", "2"]
    assert float(written[0]["train_loss"]) == 8 / 6
    assert written[0]["num_train_clients"] == "3"
    # the weights' serialized size (Flower's count) to each of 3 clients for
    # training and again for evaluation; back from each trained client only
    size = initial.count_bytes()
    assert written[0]["bytes_sent"] == str(2 * 3 * size)
    assert written[0]["bytes_received"] == str(3 * size)
    # pooled: 6 of 30 correct; mean of 0.1, 0.2, 0.3
    assert float(written[1]["test_acc_pooled"]) == 6 / 30
    assert float(written[1]["test_acc_mean"]) == np.mean([0.1, 0.2, 0.3])
    clients = rows(tmp_path / "clients.csv")
    assert [(c["round"], c["partition_id"], c["correct"]) for c in clients] == [
        (r, str(p), str(p + 1)) for r in ("1", "2") for p in range(3)
    ]


def test_aggregate_hooks_return_their_results_and_record_nothing(tmp_path):
    s = strategy(tmp_path)
    grid = AnsweringGrid({10: 0, 11: 1, 12: 2})
    initial = ArrayRecord({"w": Array(WEIGHTS)})
    messages = list(s.configure_train(1, initial, s_config(), grid))
    arrays, metrics = s.aggregate_train(1, grid.send_and_receive(messages))
    assert arrays is not None and metrics is not None
    assert metrics["num-train-clients"] == 3
    evaluated = s.aggregate_evaluate(
        1, grid.send_and_receive(s.configure_evaluate(1, arrays, s_config(), grid))
    )
    assert evaluated is not None
    assert evaluated["partition-id"] == [0, 1, 2]
    assert evaluated["correct"] == [1, 2, 3]
    assert not (tmp_path / "rounds.csv").read_text().strip().splitlines()[1:]


def test_a_resumed_start_runs_only_the_remaining_rounds(tmp_path):
    s = strategy(tmp_path)
    grid = AnsweringGrid({10: 0, 11: 1, 12: 2})
    seen: list[int] = []
    s.start(
        grid,
        ArrayRecord({"w": Array(WEIGHTS)}),
        first_round=2,
        before_round=lambda: seen.append(-1),
        after_round=lambda r, a: seen.append(r),
    )
    assert seen == [-1, 2]
    assert [r["round"] for r in rows(tmp_path / "rounds.csv")] == ["2"]
    assert isinstance(s.checkpoint_state(), ServerState)


def s_config() -> ConfigRecord:
    return ConfigRecord()
