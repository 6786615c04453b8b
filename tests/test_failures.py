"""A failing client: one line and a kept record by default, or tolerated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from pflcore.fl.protocol import ClientError
from pflcore.fl.strategy import PartitionStrategy
from pflcore.records.results import RunRecorder
from tests.fakedata import write_mnist
from tests.mainrun import output_tail, run_module

RUN = [
    "algorithm=fedavg",
    "num_clients=4",
    "clients_per_round=3",
    "num_rounds=3",
    "eval_every=1",
    "partition.a=4",
    "batch_size=3",
    "local_steps=2",
    "inject.client_failure.round=2",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, train=300, test=100)
    return root


def sampled_in_round_2() -> int:
    # the seeded sampler: the first of round 2's three clients
    rng = np.random.default_rng([0, 2])
    return int(sorted(rng.choice(4, size=3, replace=False).tolist())[0])


@pytest.mark.slow
def test_by_default_the_run_stops_naming_client_round_stage_and_error(
    data_root, tmp_path
):
    pid = sampled_in_round_2()
    result = run_module(
        "perfedavg.main",
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *RUN,
        f"inject.client_failure.partition={pid}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, output_tail(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run failed after 1 recorded rounds"), last
    assert f"client {pid} failed in training of round 2" in last
    assert f"injected failure of client {pid} in train of round 2" in last
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["rounds_completed"] == 1
    assert len(pd.read_csv(tmp_path / "run" / "rounds.csv")) == 1  # round 1 kept


@pytest.mark.slow
def test_tolerant_runs_finish_and_record_the_failure(data_root, tmp_path):
    pid = sampled_in_round_2()
    result = run_module(
        "perfedavg.main",
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *RUN,
        f"inject.client_failure.partition={pid}",
        "on_client_failure=tolerate",
        cwd=tmp_path,
    )
    assert result.returncode == 0, output_tail(result)
    rounds = pd.read_csv(
        tmp_path / "run" / "rounds.csv", dtype={"failed_partitions": str}
    )
    assert rounds["failed_clients"].tolist() == [0, 1, 0]
    assert rounds["failed_partitions"].tolist()[1] == str(pid)
    assert rounds["num_train_clients"].tolist() == [3, 2, 3]
    failures = pd.read_csv(tmp_path / "run" / "failures.csv")
    assert failures[["round", "partition_id", "stage"]].values.tolist() == [
        [2, pid, "training"]
    ]
    assert "injected failure" in failures["error"][0]


@pytest.mark.slow
def test_a_client_past_the_timeout_is_named(data_root, tmp_path):
    pid = sampled_in_round_2()
    result = run_module(
        "perfedavg.main",
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *RUN,
        f"inject.client_failure.partition={pid}",
        "inject.client_failure.mode=timeout",
        "inject.client_failure.sleep_s=120",
        "timeout_s=40",  # far above a round here, far below the client's sleep
        cwd=tmp_path,
    )
    assert result.returncode == 2, output_tail(result)
    last = result.stderr.strip().splitlines()[-1]
    # normally the injected client in round 2; on a machine so loaded that the
    # first round's actor start-up outlasts the timeout, round 1's clients
    named = re.search(
        r"client (\d+) failed in training of round (\d): no reply before the timeout",
        last,
    )
    assert named, last
    assert (int(named[1]), int(named[2])) == (pid, 2) or named[2] == "1", last


def reply(pid: int, n: int, value: float) -> Message:
    metrics = MetricRecord(
        {"num-examples": n, "train-loss": value, "partition-id": pid}
    )
    arrays = ArrayRecord({"w": Array(np.full(2, value, dtype=np.float32))})
    message = Message(
        RecordDict({"arrays": arrays, "metrics": metrics}),
        dst_node_id=0,
        message_type=MessageType.TRAIN,
    )
    message.metadata.__dict__["_src_node_id"] = 10 + pid
    return message


def failed(pid: int) -> Message:
    message = Message(Error(code=0, reason="boom"), reply_to=reply(pid, 1, 0.0))
    message.metadata.__dict__["_src_node_id"] = 10 + pid
    return message


def strategy(tmp_path: Path, policy: str) -> PartitionStrategy:
    s = PartitionStrategy(
        RunRecorder(
            tmp_path, {"seed": 0}, extra_fields=("failed_clients", "failed_partitions")
        ),
        num_clients=3,
        clients_per_round=3,
        num_rounds=1,
        eval_every=1,
        seed=0,
        on_client_failure=policy,
    )
    s.bind_partitions({p: 10 + p for p in range(3)})
    s.configure_train(
        1, ArrayRecord({"w": Array(np.zeros(2, np.float32))}), ConfigRecord(), None
    )
    return s


def test_the_aggregate_is_renormalised_over_the_replies_that_arrived(tmp_path):
    s = strategy(tmp_path, "tolerate")
    arrays, _ = s.aggregate_train(1, [reply(0, 10, 1.0), failed(1), reply(2, 30, 5.0)])
    # (10 * 1 + 30 * 5) / 40 = 4: the failed client's weight is gone entirely
    np.testing.assert_allclose(arrays["w"].numpy(), [4.0, 4.0])
    stopping = strategy(tmp_path / "stop", "stop")
    with pytest.raises(
        ClientError, match="client 1 failed in training of round 1: boom"
    ):
        stopping.aggregate_train(1, [reply(0, 10, 1.0), failed(1), reply(2, 30, 5.0)])


RAY_REASON = (
    "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor"
    '.run() (pid=1)\n  File "client.py", line 2, in train\n    raise'
    " _non_finite(loss)\npkg.training.NonFiniteLossError: loss became nan; lower lr"
    "\n\nThe above exception was the direct cause of the following exception:\n\n"
    'ray::ClientAppActor.run() (pid=1)\n  File "ray_actor.py", line 65, in run\n'
    "    raise ClientAppException(str(ex)) from ex\nflwr.clientapp.client_app."
    "ClientAppException: \nException ClientAppException occurred. Message: loss "
    "became nan; lower lr'>"
)


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        (RAY_REASON, "NonFiniteLossError: loss became nan; lower lr"),
        (
            "<class 'ZeroDivisionError'>:<'division by zero'>",
            "ZeroDivisionError: division by zero",
        ),
        ("<class 'a.b.KeyError'>:<''w''>", "KeyError: 'w'"),
        ("no reply before\n the timeout", "no reply before the timeout"),
    ],
)
def test_a_client_error_is_named_by_the_exception_the_client_raised(reason, said):
    from pflcore.fl.protocol import client_error_reason

    assert client_error_reason(reason) == said


def test_the_stopping_error_names_the_clients_exception_not_rays(tmp_path):
    s = strategy(tmp_path, "stop")
    bad = Message(Error(code=0, reason=RAY_REASON), reply_to=reply(1, 1, 0.0))
    bad.metadata.__dict__["_src_node_id"] = 11
    with pytest.raises(ClientError) as err:
        s.aggregate_train(1, [reply(0, 10, 1.0), bad, reply(2, 30, 5.0)])
    assert str(err.value) == (
        "client 1 failed in training of round 1: "
        "NonFiniteLossError: loss became nan; lower lr"
    )
