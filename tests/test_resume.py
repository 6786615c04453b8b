"""A run killed with SIGKILL after a checkpoint resumes to the same records.

For every package: N rounds straight, and separately the same run killed
right after its round-2 checkpoint (the test-only ``inject.kill_after_round``)
and resumed with ``resume=<run folder>``: ``rounds.csv`` and ``clients.csv``
are identical, wall-time columns aside.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from pflcore.records.results import effective_status
from tests.fakedata import write_cifar10, write_mnist
from tests.mainrun import output_tail, run_module

WALL_TIME = ["time_s", "round_s"]

CASES = {
    "fedper": (
        "fedper.main",
        "cifar",
        [
            "algorithm=fedper",
            "num_clients=4",
            "num_rounds=4",
            "local_epochs=1",
            "batch_size=16",
            "eval_batch_size=64",
        ],
    ),
    "pfedhn_pc": (
        "pfedhn.main",
        "mnist",
        [
            "algorithm=pfedhn_pc",
            "num_clients=4",
            "num_rounds=4",
            "eval_every=1",
            "local_steps=3",
            "batch_size=16",
            "partition.val_size=200",
            "model.target=mlp",
            "model.n_hidden=1",
        ],
    ),
    "perfedavg_momentum": (
        "perfedavg.main",
        "mnist",
        [
            "algorithm=fedavg",
            "server_lr=0.5",
            "server_momentum=0.5",
            "num_clients=4",
            "clients_per_round=2",
            "num_rounds=4",
            "eval_every=1",
            "partition.a=4",
            "batch_size=3",
            "local_steps=2",
        ],
    ),
    "jiang_server_adam": (
        "perfedavg.main",
        "mnist",
        [
            "algorithm=jiang",
            "num_clients=4",
            "clients_per_round=2",
            "num_rounds=1",
            "eval_every=1",
            "partition.a=4",
            "batch_size=3",
            "local_steps=0",
            "local_epochs=1",
            "finetune.unit=epochs",
            "jiang.holdout_clients=1",
            "jiang.reptile.rounds=3",
            "jiang.reptile.inner_epochs=1",
            "jiang.reptile.optimizer=server_adam",
        ],
    ),
    "ditto": (
        "ditto.main",
        "cifar",
        [
            "num_clients=5",  # 10 shards of 2 cover the 10 classes
            "num_rounds=4",
            "local_epochs=1",
            "batch_size=16",
            "eval_batch_size=64",
            "ditto.lam=0.5",
        ],
    ),
    "fedfomo": (
        "fedfomo.main",
        "cifar",
        [
            "num_clients=6",
            "clients_per_round=4",
            "num_rounds=4",
            "local_epochs=1",
            "batch_size=16",
            "eval_batch_size=64",
            "fomo.num_candidates=3",
            "fomo.num_clusters=2",
            "fomo.global_candidate=true",
        ],
    ),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    cifar = tmp_path_factory.mktemp("cifar")
    write_cifar10(cifar, per_batch=48, test=40)
    mnist = tmp_path_factory.mktemp("mnist")
    write_mnist(mnist, train=800, test=200)
    return {"cifar": cifar, "mnist": mnist}


def records(folder: Path) -> tuple[pd.DataFrame, str]:
    rounds = pd.read_csv(folder / "rounds.csv").drop(columns=WALL_TIME)
    return rounds, (folder / "clients.csv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_and_resumed_run_equals_the_straight_run(roots, tmp_path, case):
    module, data, overrides = CASES[case]
    common = [f"dataset.root={roots[data]}", "checkpoint_every=2", *overrides]
    straight = run_module(
        module, *common, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path
    )
    assert straight.returncode == 0, output_tail(straight)

    killed = run_module(
        module,
        *common,
        "inject.kill_after_round=2",
        f"hydra.run.dir={tmp_path / 'killed'}",
        cwd=tmp_path,
    )
    assert killed.returncode == -signal.SIGKILL, output_tail(killed)
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["status"] == "running" and summary["rounds_completed"] == 2
    assert effective_status(summary) == "interrupted"

    resumed = run_module(module, *common, f"resume={tmp_path / 'killed'}", cwd=tmp_path)
    assert resumed.returncode == 0, output_tail(resumed)
    assert "resuming" in resumed.stderr
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["status"] == "completed"

    rounds_a, clients_a = records(tmp_path / "straight")
    rounds_b, clients_b = records(tmp_path / "killed")
    pd.testing.assert_frame_equal(rounds_a, rounds_b)
    assert clients_a == clients_b


@pytest.mark.slow
def test_resuming_with_a_changed_setting_is_refused_in_one_line(roots, tmp_path):
    module, data, overrides = CASES["perfedavg_momentum"]
    common = [f"dataset.root={roots[data]}", "checkpoint_every=2", *overrides]
    first = run_module(
        module,
        *common,
        "inject.kill_after_round=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert first.returncode == -signal.SIGKILL, output_tail(first)
    again = run_module(
        module, *common, "seed=7", f"resume={tmp_path / 'run'}", cwd=tmp_path
    )
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: resume={tmp_path / 'run'}: cannot resume with a changed setting: "
        "seed (the run used 0, now 7)"
    )


@pytest.mark.slow
def test_the_same_command_again_finishes_an_interrupted_run(roots, tmp_path):
    """What run_figures.sh relies on: rerun the command, the run continues."""
    module, data, overrides = CASES["perfedavg_momentum"]
    command = [
        f"dataset.root={roots[data]}",
        "checkpoint_every=2",
        *overrides,
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    killed = run_module(module, *command, "inject.kill_after_round=2", cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, output_tail(killed)
    again = run_module(module, *command, cwd=tmp_path)
    assert again.returncode == 0, output_tail(again)
    assert "resuming" in again.stderr
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2, 3, 4]
    done = run_module(module, *command, cwd=tmp_path)
    assert done.returncode == 0 and "already complete" in done.stdout
    assert pd.read_csv(tmp_path / "run" / "rounds.csv")["round"].tolist() == [
        1,
        2,
        3,
        4,
    ]

    # another seed into the same folder (a seed sweep whose subdir leaves the
    # seed out) is refused in one line, and the finished run's records stay
    before = (tmp_path / "run" / "rounds.csv").read_text()
    other = run_module(module, *command, "seed=1", cwd=tmp_path)
    assert other.returncode == 2, output_tail(other)
    assert other.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'run'} already holds a run with other settings "
        "(seed=0 there, 1 now); delete it, or give each run its own folder "
        "(hydra.run.dir, or a hydra.sweep.subdir naming every swept key)"
    )
    assert (tmp_path / "run" / "rounds.csv").read_text() == before
