"""pflcore.fl.protocol: both sides of every message agree, and bad replies are named."""

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from pflcore.fl.protocol import (
    ProtocolError,
    config_int,
    eval_counts,
    eval_metrics,
    has_eval,
    identity_of,
    identity_reply,
    instruction,
    reply_partition,
    scalar,
    server_round_of,
    train_metrics,
)
from pflcore.local.training import EvalStats


def message_with(config: ConfigRecord) -> Message:
    return Message(RecordDict({"config": config}), dst_node_id=1, message_type="train")


def test_an_instruction_carries_the_round_and_hyphenated_keys():
    record = instruction(7, num_threads=2, local_steps=1)
    assert dict(record) == {"server-round": 7, "num-threads": 2, "local-steps": 1}
    msg = message_with(record)
    assert server_round_of(msg) == 7
    assert config_int(record, "num-threads") == 2
    assert config_int(record, "absent", default=0) == 0


def test_a_message_without_its_round_is_named():
    with pytest.raises(ProtocolError, match="server-round"):
        server_round_of(message_with(ConfigRecord({})))
    with pytest.raises(ProtocolError, match="must be a number"):
        config_int(ConfigRecord({"k": "x"}), "k")


def test_train_reply_metrics():
    m = train_metrics(3, 0.25, 40, client_s=1.5)
    assert dict(m) == {
        "num-examples": 40,
        "train-loss": 0.25,
        "partition-id": 3,
        "client-s": 1.5,
    }
    assert reply_partition(m) == 3


def test_eval_counts_read_back_what_eval_metrics_wrote_per_prefix():
    test = EvalStats(correct=9, loss_sum=4.5, num_samples=12)
    val = EvalStats(correct=1, loss_sum=0.5, num_samples=2)
    m = eval_metrics(5, test, val=val)
    assert eval_counts(m) == (9, 4.5, 12)
    assert eval_counts(m, "val") == (1, 0.5, 2)
    assert has_eval(m) and has_eval(m, "val") and not has_eval(m, "before")
    assert reply_partition(m) == 5


def test_a_reply_missing_a_count_or_with_a_list_is_named():
    with pytest.raises(ProtocolError, match="'correct'"):
        eval_counts(MetricRecord({"partition-id": 1}))
    with pytest.raises(ProtocolError, match="must be a scalar"):
        scalar(MetricRecord({"x": [1.0, 2.0]}), "x")


def test_the_partition_query_answer_names_the_partition():
    query = Message(RecordDict(), dst_node_id=1, message_type="query")
    answer = identity_reply(query, 6)
    assert identity_of(answer.content) == 6
    with pytest.raises(ProtocolError, match="identity"):
        identity_of(RecordDict())
