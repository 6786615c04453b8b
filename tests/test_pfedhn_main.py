"""``python -m pfedhn.main`` end to end through the real Ray simulation."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from tests.fakedata import write_mnist
from tests.mainrun import REPO, output_tail, read_run, run_module

SMALL = [
    "num_clients=4",
    "num_rounds=4",
    "eval_every=2",
    "local_steps=3",
    "batch_size=16",
    "partition.val_size=200",
    "model.target=mlp",
    "model.n_hidden=1",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, train=800, test=200)
    return root


run_main = partial(run_module, "pfedhn.main")


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory) -> dict[str, Path]:
    out = {}
    cases = {
        "pfedhn": ["algorithm=pfedhn", "novel.clients=[3]", "novel.rounds=2"],
        "pfedhn_pc": ["algorithm=pfedhn_pc"],
    }
    for name, extra in cases.items():
        folder = tmp_path_factory.mktemp(name)
        result = run_main(
            f"dataset.root={data_root}",
            f"hydra.run.dir={folder}",
            *SMALL,
            *extra,
            cwd=folder,
        )
        assert result.returncode == 0, output_tail(result)
        out[name] = folder
    return out


@pytest.mark.slow
def test_pfedhn_with_a_novel_client(runs):
    rounds, clients, summary = read_run(runs["pfedhn"])
    assert summary["status"] == "completed" and rounds["round"].tolist() == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert (rounds["num_train_clients"] == 1).all()
    evaluated = rounds.dropna(subset=["test_acc_pooled"])
    assert evaluated["round"].tolist() == [2, 4, 6]
    assert evaluated["phase"].tolist() == ["train", "train", "novel"]
    # Training-phase evaluations cover the trained clients; the novel phase client 3.
    assert sorted(clients[clients["round"] == 4]["partition_id"]) == [0, 1, 2]
    assert clients[clients["round"] == 6]["partition_id"].tolist() == [3]
    last = clients[clients["round"] == 4]
    row = rounds[rounds["round"] == 4].iloc[0]
    assert row["test_acc_pooled"] == pytest.approx(
        last["correct"].sum() / last["num_samples"].sum()
    )
    # The headline: test accuracy at the best pooled validation round.
    best = (
        evaluated[evaluated["phase"] == "train"]
        .sort_values("val_acc_pooled", kind="stable", ascending=False)
        .iloc[0]
    )
    assert summary["best_val"]["round"] in (2, 4)
    assert summary["best_val"]["val_acc_pooled"] == pytest.approx(
        best["val_acc_pooled"]
    )
    assert summary["novel"]["round"] == 6 and summary["novel"]["num_clients"] == 1
    # Only target weights cross the wire: per training round one client's
    # 784*100+100+100*10+10 float32 each way.
    target_bytes = 4 * 79_510
    train_rows = rounds[~rounds["round"].isin([2, 4, 6])]
    assert (train_rows["bytes_sent"] >= target_bytes).all()
    assert (train_rows["bytes_sent"] < 1.01 * target_bytes).all()
    assert (train_rows["bytes_received"] == train_rows["bytes_sent"]).all()
    assert (
        summary["config"]["model"]["embed_dim"] == 2
        and summary["config"]["hn"]["lr"] == 0.01
    )


@pytest.mark.slow
def test_pfedhn_pc_sends_the_body_only(runs):
    rounds, clients, summary = read_run(runs["pfedhn_pc"])
    assert summary["status"] == "completed" and len(rounds) == 4
    assert summary["config"]["hn"]["lr"] == 0.05
    body_bytes = 4 * (784 * 100 + 100)
    first = rounds.iloc[0]
    assert body_bytes <= first["bytes_sent"] < 1.01 * body_bytes
    assert sorted(clients[clients["round"] == 4]["partition_id"]) == [0, 1, 2, 3]


@pytest.mark.slow
def test_pc_and_pfedhn_share_the_partition(runs):
    same = [pd.read_csv(runs[a] / "partition.csv") for a in ("pfedhn", "pfedhn_pc")]
    pd.testing.assert_frame_equal(*same)


@pytest.mark.slow
def test_bad_config_exits_2_before_ray(data_root, tmp_path):
    result = run_main(
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path}",
        *SMALL,
        "novel.clients=[7]",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert "novel.clients must list partition-ids" in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.classes_per_client=3", "pFedHN's partition"),
        ("partition.test_source=nope", "partition.test_source"),
        ("model.target=resnet", "model.target"),
        ("clients_per_round=4", "exceeds the 3 clients that train"),
        ("novel.lr=-1", "novel.lr"),
    ],
)
def test_config_checks(override, message):
    from hydra import compose, initialize_config_dir

    from pfedhn.main import PACKAGE
    from pflcore.config import ConfigError, to_plain

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="pfedhn",
            overrides=[*SMALL, "novel.clients=[3]", "novel.rounds=2", override],
        )
    with pytest.raises(ConfigError, match=message):
        PACKAGE.check(to_plain(cfg))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm=local"], "Local-only has no model for them"),
        (["novel.clients=[0]"], "novel.dirichlet draws novel clients 47..49"),
        (["novel.dirichlet=[0.5,-1]"], "novel.dirichlet must be a list of"),
        (["novel.sizes.test=0"], "novel.sizes.test must be a positive integer"),
    ],
)
def test_dirichlet_novel_client_checks(overrides, message):
    from hydra import compose, initialize_config_dir

    from pfedhn.main import PACKAGE
    from pflcore.config import ConfigError, to_plain

    base = ["novel.dirichlet=[10,0.1,0.01]", "novel.rounds=30", "algorithm=fedavg_ft"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="pfedhn", overrides=[*base, *overrides])
    with pytest.raises(ConfigError, match=message):
        PACKAGE.check(to_plain(cfg))


def test_dirichlet_novel_clients_are_the_last_partition_ids():
    from hydra import compose, initialize_config_dir

    from pfedhn.main import PACKAGE, resolve_defaults
    from pflcore.config import to_plain

    over = ["novel.dirichlet=[10,0.1]", "novel.per_concentration=2", "novel.rounds=8"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = to_plain(compose(config_name="pfedhn", overrides=over))
    PACKAGE.check(config)
    resolve_defaults(config)
    assert config["novel"]["clients"] == [46, 47, 48, 49]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["pfedhn", "fedavg_ft"])
def test_dirichlet_novel_clients_end_to_end(data_root, tmp_path, algorithm):
    novel = [
        "num_clients=6",
        "novel.dirichlet=[100,0.05]",
        "novel.sizes.train=30",
        "novel.sizes.val=10",
        "novel.sizes.test=10",
        "novel.rounds=2",
        "finetune.steps=3",
    ]
    result = run_main(
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path}",
        *SMALL,
        *novel,
        f"algorithm={algorithm}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, output_tail(result)
    rounds, clients, summary = read_run(tmp_path)
    assert summary["status"] == "completed"
    assert summary["config"]["novel"]["clients"] == [4, 5]
    drawn = summary["novel_clients"]
    assert [d["partition_id"] for d in drawn] == [4, 5]
    assert [d["concentration"] for d in drawn] == [100, 0.05]
    assert all(
        0 <= d["tv_nearest"] <= 1 and 0 <= d["tv_population"] <= 1 for d in drawn
    )
    # the held-out clients never train; the last evaluation is theirs alone
    last = int(rounds["round"].max())
    assert summary["novel"]["num_clients"] == 2 and summary["novel"]["round"] == last
    assert sorted(clients[clients["round"] == last]["partition_id"]) == [4, 5]
    assert set(clients[clients["round"] == 4]["partition_id"]) == {0, 1, 2, 3}
    assert (rounds["num_train_clients"].fillna(0) <= 1).all()
