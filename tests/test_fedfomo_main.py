"""``python -m fedfomo.main`` end to end through the real Ray simulation (M = 5)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord

from fedfomo.models import TFCNN
from tests.fakedata import write_cifar10

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "num_clients=6",
    "num_rounds=3",
    "local_epochs=1",
    "batch_size=16",
    "eval_batch_size=64",
    "fomo.num_candidates=5",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, per_batch=48, test=20)
    return root


def run_main(*overrides: str, cwd: Path, timeout: int = 400):
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "fedfomo.main", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def sweep(data_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    result = run_main(
        "--multirun",
        "algorithm=fedfomo,fedavg,local",
        f"dataset.root={data_root}",
        f"hydra.sweep.dir={folder}",
        "hydra.sweep.subdir=${algorithm}",
        *SMALL,
        cwd=folder,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder


def read(folder: Path):
    return (
        pd.read_csv(folder / "rounds.csv"),
        pd.read_csv(folder / "clients.csv"),
        json.loads((folder / "summary.json").read_text()),
    )


def test_fedfomo_and_baselines_record_every_round_on_one_partition(sweep):
    partitions = []
    for algorithm in ("fedfomo", "fedavg", "local"):
        rounds, clients, summary = read(sweep / algorithm)
        assert summary["status"] == "completed", summary.get("error")
        assert rounds["round"].tolist() == [1, 2, 3]
        assert sorted(clients["partition_id"].unique()) == list(range(6))
        assert len(clients) == 3 * 6  # every client tested every round
        assert summary["num_parameters"] == 122_570
        partitions.append(pd.read_csv(sweep / algorithm / "partition.csv"))
    pd.testing.assert_frame_equal(partitions[0], partitions[1])
    pd.testing.assert_frame_equal(partitions[0], partitions[2])


def test_fedfomo_sends_m_models_per_client_and_learns_affinities(sweep):
    rounds, _, _ = read(sweep / "fedfomo")
    model_bytes = ArrayRecord(TFCNN(10).state_dict()).count_bytes()
    # each round: train messages carry no arrays; every client then gets its own
    # upload plus M-1 = 4 others (all 6 clients uploaded)
    assert rounds["bytes_sent"].tolist() == [6 * 5 * model_bytes] * 3
    assert rounds["bytes_received"].tolist() == [6 * model_bytes] * 3
    affinity = pd.read_csv(sweep / "fedfomo" / "affinity.csv").set_index("partition_id")
    p = affinity.to_numpy()
    assert p.shape == (6, 6)
    assert not np.allclose(p, np.eye(6) * 0.1)  # the weights reached the server
    # each row got at most M entries per round, 3 rounds
    assert ((p != 0).sum(axis=1) <= 6).all()


def test_local_sends_nothing_and_fedavg_sends_the_model(sweep):
    local, _, _ = read(sweep / "local")
    assert local["bytes_sent"].sum() == 0 and local["bytes_received"].sum() == 0
    fedavg, _, _ = read(sweep / "fedavg")
    model_bytes = ArrayRecord(TFCNN(10).state_dict()).count_bytes()
    assert fedavg["bytes_received"].tolist() == [6 * model_bytes] * 3


def test_partial_participation_on_a_latent_embedding_split(data_root, tmp_path):
    # distributions from a precomputed embedding: label parity, 2 groups of 3
    from pflcore.data import load_dataset

    labels = load_dataset("cifar10", str(data_root)).y_train.numpy()
    emb = np.stack([(labels % 2) * 50.0, np.zeros(labels.size)], axis=1)
    np.save(tmp_path / "emb.npy", emb.astype(np.float32))
    result = run_main(
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *SMALL,
        "clients_per_round=3",
        "eval_every=2",
        "partition.kind=latent",
        "partition.num_distributions=2",
        "partition.features=embedding",
        f"partition.embedding_path={tmp_path / 'emb.npy'}",
        "fomo.global_candidate=true",
        "fomo.norm=l2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rounds, clients, summary = read(tmp_path / "run")
    assert summary["client_distribution"] == [0, 0, 0, 1, 1, 1]
    assert rounds["num_train_clients"].tolist() == [3, 3, 3]
    assert sorted(clients["round"].unique()) == [2, 3]  # eval_every=2 and the last
    partition = pd.read_csv(tmp_path / "run" / "partition.csv")
    classes = partition[[c for c in partition.columns if c.startswith("c")]]
    held = classes.to_numpy().reshape(6, 2, 10).sum(axis=1) > 0
    parity = [set(np.flatnonzero(row) % 2) for row in held]
    assert parity[:3] == [parity[0]] * 3 and parity[3:] == [parity[3]] * 3
    assert parity[0] != parity[3]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["fomo.num_candidates=9"], "fomo.num_candidates (M, own model included)"),
        (["fomo.norm=linf"], "fomo.norm must be one of"),
        (["partition.kind=latent", "partition.num_distributions=4"], "must divide"),
        (["partition.val_fraction=0"], "partition.val_fraction must lie in (0, 1)"),
        (["algorithm=fedprox"], "algorithm='fedprox' is not one of"),
        (["dataset.image_size=16"], "dataset.image_size must be >= 22"),
        (
            ["partition.kind=latent", "partition.features=embedding"],
            "needs partition.embedding_path",
        ),
    ],
)
def test_bad_input_stops_before_ray_with_a_clear_message(
    data_root, tmp_path, overrides, expected
):
    base = [f"dataset.root={data_root}", f"hydra.run.dir={tmp_path}", *SMALL]
    result = run_main(*base, *overrides, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert expected in output, output[-2000:]
    assert "Traceback" not in output and "ActorPool" not in output
    assert not (tmp_path / "rounds.csv").exists()
