"""``python -m fedfomo.main`` end to end through the real Ray simulation (M = 5)."""

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord

from fedfomo.models import TFCNN
from tests.fakedata import write_cifar10
from tests.mainrun import REPO, output_tail, read_run, run_module

SMALL = [
    "num_clients=6",
    "num_rounds=2",
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


run_main = partial(run_module, "fedfomo.main")


@pytest.fixture(scope="module")
def sweep(data_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    result = run_main(
        "--multirun",
        "algorithm=fedfomo,fedavg,fedavg_ft,local",
        f"dataset.root={data_root}",
        f"hydra.sweep.dir={folder}",
        "hydra.sweep.subdir=${algorithm}",
        *SMALL,
        cwd=folder,
    )
    assert result.returncode == 0, output_tail(result)
    return folder


@pytest.mark.slow
def test_fedfomo_and_baselines_record_every_round_on_one_partition(sweep):
    partitions = []
    for algorithm in ("fedfomo", "fedavg", "fedavg_ft", "local"):
        rounds, clients, summary = read_run(sweep / algorithm)
        assert summary["status"] == "completed", summary.get("error")
        assert rounds["round"].tolist() == [1, 2]
        assert sorted(clients["partition_id"].unique()) == list(range(6))
        assert len(clients) == 2 * 6  # every client tested every round
        assert summary["num_parameters"] == 122_570
        partitions.append(pd.read_csv(sweep / algorithm / "partition.csv"))
    for other in partitions[1:]:
        pd.testing.assert_frame_equal(partitions[0], other)


@pytest.mark.slow
def test_fedavg_ft_records_fedavg_before_fine_tuning(sweep):
    # the same seed trains the same global models; fine-tuning adapts a copy, so
    # FedAvg + FT's "before" counts are the separate FedAvg run's, client by client
    fedavg_rounds, fedavg_clients, _ = read_run(sweep / "fedavg")
    ft_rounds, ft_clients, _ = read_run(sweep / "fedavg_ft")
    assert ft_rounds["train_loss"].tolist() == fedavg_rounds["train_loss"].tolist()
    key = ["round", "partition_id"]
    fedavg_clients = fedavg_clients.sort_values(key).reset_index(drop=True)
    ft_clients = ft_clients.sort_values(key).reset_index(drop=True)
    assert ft_clients[key].equals(fedavg_clients[key])
    assert np.array_equal(ft_clients["before_accuracy"], fedavg_clients["accuracy"])
    np.testing.assert_allclose(
        ft_clients["before_loss"], fedavg_clients["loss"], rtol=1e-6
    )
    np.testing.assert_allclose(
        ft_rounds["before_acc_mean"], fedavg_rounds["test_acc_mean"], rtol=1e-12
    )
    # and the adapted models are different models
    assert not np.allclose(ft_clients["loss"], ft_clients["before_loss"])


@pytest.mark.slow
def test_fedfomo_sends_m_models_per_client_and_learns_affinities(sweep):
    rounds, _, _ = read_run(sweep / "fedfomo")
    model_bytes = ArrayRecord(TFCNN(10).state_dict()).count_bytes()
    # each round: train messages carry no arrays; every client then gets its own
    # upload plus M-1 = 4 others (all 6 clients uploaded)
    assert rounds["bytes_sent"].tolist() == [6 * 5 * model_bytes] * 2
    assert rounds["bytes_received"].tolist() == [6 * model_bytes] * 2
    affinity = pd.read_csv(sweep / "fedfomo" / "affinity.csv").set_index("partition_id")
    p = affinity.to_numpy()
    assert p.shape == (6, 6)
    assert not np.allclose(p, np.eye(6) * 0.1)  # the weights reached the server
    # the own model is always a candidate: every diagonal entry moved
    assert not np.isclose(np.diag(p), 0.1).any()


@pytest.mark.slow
def test_local_sends_nothing_and_fedavg_sends_the_model(sweep):
    local, _, _ = read_run(sweep / "local")
    assert local["bytes_sent"].sum() == 0 and local["bytes_received"].sum() == 0
    fedavg, _, _ = read_run(sweep / "fedavg")
    model_bytes = ArrayRecord(TFCNN(10).state_dict()).count_bytes()
    assert fedavg["bytes_received"].tolist() == [6 * model_bytes] * 2


@pytest.mark.slow
def test_partial_participation_on_a_latent_embedding_split(data_root, tmp_path):
    # distributions from a precomputed embedding: label parity, 2 groups of 3
    from pflcore.data.images import load_dataset

    labels = load_dataset("cifar10", str(data_root)).y_train.numpy()
    emb = np.stack([(labels % 2) * 50.0, np.zeros(labels.size)], axis=1)
    np.save(tmp_path / "emb.npy", emb.astype(np.float32))
    result = run_main(
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *SMALL,
        "num_rounds=3",
        "clients_per_round=3",
        "eval_every=2",
        "partition.kind=latent",
        "partition.num_distributions=2",
        "partition.features=embedding",
        f"partition.embedding_path={tmp_path / 'emb.npy'}",
        "fomo.global_candidate=true",
        "fomo.num_clusters=2",
        "fomo.norm=l2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, output_tail(result)
    rounds, clients, summary = read_run(tmp_path / "run")
    assert summary["client_distribution"] == [0, 0, 0, 1, 1, 1]
    assert rounds["num_train_clients"].tolist() == [3, 3, 3]
    # each of the next round's 3 clients gets the uploads it may weigh plus the
    # 2 cluster models and the global model
    model_bytes = ArrayRecord(TFCNN(10).state_dict()).count_bytes()
    for sent in rounds["bytes_sent"].tolist()[:2]:
        assert sent % model_bytes == 0 and sent // model_bytes >= 3 * (1 + 3)
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
        (["partition.pool_fraction=0"], "partition.pool_fraction must lie in (0, 1]"),
        (
            ["algorithm=fedprox"],
            "algorithm must be one of ['fedfomo', 'fedavg', 'fedavg_ft', 'local'], "
            "got 'fedprox'",
        ),
        (["dataset.image_size=16"], "dataset.image_size must be >= 22"),
        (["fomo.num_clusters=7"], "fomo.num_clusters must lie in 0..num_clients=6"),
        (["dataset.test_split=pooled"], "dataset.test_split must be one of"),
        (["lr_decay=0"], "lr_decay must lie in (0, 1], got 0"),
        (["partition.embedding.epochs=0"], "partition.embedding.epochs must be a"),
        (
            ["dataset.subset_fraction=0.5"],
            "dataset.subset_fraction=0.5 is not used by this package; "
            "use partition.pool_fraction",
        ),
        (
            ["partition.kind=latent", "partition.features=embedding"],
            "partition.features=embedding needs partition.embedding_path",
        ),
    ],
)
def test_bad_settings_are_rejected_with_a_clear_message(overrides, expected):
    from hydra import compose, initialize_config_dir

    from fedfomo.main import PACKAGE
    from pflcore.config import ConfigError, to_plain

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("fedfomo", overrides=[*SMALL, *overrides])
    with pytest.raises(ConfigError) as info:
        PACKAGE.check(to_plain(cfg))
    assert expected in str(info.value)


@pytest.mark.slow
def test_bad_input_stops_before_ray_with_one_line(data_root, tmp_path):
    result = run_main(
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path}",
        *SMALL,
        "partition.kind=latent",
        "partition.num_distributions=2",
        "partition.features=embedding",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    assert "error: partition.features=embedding needs partition.embedding_path" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "rounds.csv").exists()
