"""``python -m perfedavg.main`` end to end through Ray, and bad input."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from perfedavg.main import PACKAGE
from pflcore.config import ConfigError, to_plain
from pflcore.data.partition import PartitionError
from tests.fake_emnist import write_emnist_npz
from tests.fakedata import write_mnist
from tests.mainrun import REPO, output_tail, read_run, run_module

CONF = str(REPO / "conf")
SMALL = [
    "num_clients=4",
    "clients_per_round=2",
    "num_rounds=2",
    "eval_every=1",
    "partition.a=4",
    "batch_size=3",
    "local_steps=2",
    "alpha=0.05",
    "beta=0.05",
    "eval_batch_size=64",
    "jiang.holdout_clients=1",
    "jiang.reptile.rounds=1",
    "jiang.reptile.inner_epochs=1",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, train=300, test=100)
    write_emnist_npz(root / "emnist_letters" / "emnist_letters.npz")
    return root


@pytest.fixture(scope="module")
def sweep(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    result = run_module(
        "perfedavg.main",
        "--multirun",
        "algorithm=perfedavg_fo,perfedavg_hf,jiang",
        f"dataset.root={data_root}",
        f"hydra.sweep.dir={out}",
        "hydra.sweep.subdir=${algorithm}",
        *SMALL,
        cwd=out,
        timeout=400,
    )
    assert result.returncode == 0, output_tail(result)
    (out / "terminal.txt").write_text(result.stdout + result.stderr)
    return out


@pytest.mark.slow
def test_the_terminal_shows_progress_lines_and_no_library_chatter(sweep):
    terminal = (sweep / "terminal.txt").read_text()
    assert "[round " in terminal and "elapsed" in terminal
    # alembic (Flower's state database) logs one INFO line per plugin on import
    assert "setup plugin" not in terminal and "alembic" not in terminal


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["perfedavg_fo", "perfedavg_hf"])
def test_per_fedavg_records_adapted_and_unadapted_accuracy(sweep, algorithm):
    rounds, clients, summary = read_run(sweep / algorithm)
    assert summary["status"] == "completed" and rounds["round"].tolist() == [1, 2]
    assert (rounds["num_train_clients"] == 2).all()
    last = clients[clients["round"] == 2]
    assert sorted(last["partition_id"]) == [0, 1, 2, 3]
    assert rounds["test_acc_mean"].iloc[-1] == pytest.approx(last["accuracy"].mean())
    assert rounds["before_acc_mean"].iloc[-1] == pytest.approx(
        last["before_accuracy"].mean()
    )
    assert "before_acc_mean" in summary["final"]


@pytest.mark.slow
def test_jiang_pipeline_runs_its_three_stages(sweep):
    rounds, clients, summary = read_run(sweep / "jiang")
    # 2 FedAvg rounds, 1 Reptile round, 1 personalization row
    assert rounds["round"].tolist() == [1, 2, 3, 4]
    assert summary["stage_rounds"] == {"fedavg": [1, 2], "reptile": [3, 3]}
    assert rounds["num_train_clients"].tolist() == [2, 2, 2, 0]
    # only the held-out client (partition-id 3) is ever evaluated
    assert set(clients["partition_id"]) == {3}
    personal = summary["personalization"]
    last = rounds.iloc[-1]
    assert personal["initial_acc"] == pytest.approx(last["before_acc_mean"])
    assert personal["personalized_acc"] == pytest.approx(last["test_acc_mean"])
    # the initial accuracy is the final global model's: the Reptile round's evaluation
    assert personal["initial_acc"] == pytest.approx(rounds["test_acc_mean"].iloc[2])


def config_of(data_root: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            "perfedavg", overrides=[f"dataset.root={data_root}", *SMALL, *overrides]
        )


@pytest.mark.parametrize(
    ("overrides", "error", "expected"),
    [
        (
            ["clients_per_round=9"],
            ConfigError,
            "clients_per_round must lie in 1..num_clients=4",
        ),
        (["delta=0"], ConfigError, "delta must be > 0"),
        (["averaging=median"], ConfigError, "averaging must be one of"),
        (
            ["algorithm=jiang", "jiang.reptile.optimizer=server_sgd"],
            ConfigError,
            "jiang.reptile.optimizer must be one of",
        ),
        (["dataset.normalize=maybe"], ConfigError, "dataset.normalize must be true"),
        (
            ["algorithm=perfedavg_so"],
            ConfigError,
            "algorithm must be one of ['perfedavg_fo', 'perfedavg_hf', 'fedavg', "
            "'fedavg_ft', 'local', 'jiang'], got 'perfedavg_so'",
        ),
        (
            ["batch_size=50"],
            ConfigError,
            "batch_size=50 exceeds the 10 training samples",
        ),
        (["finetune.batch_size=50"], ConfigError, "finetune.batch_size=50 exceeds"),
        (
            ["algorithm=perfedavg_fo", "local_steps=0"],
            ConfigError,
            "local_steps must be >= 1",
        ),
        (
            ["algorithm=jiang", "clients_per_round=4"],
            ConfigError,
            "exceeds the 3 training clients",
        ),
        (
            ["algorithm=jiang", "jiang.holdout_clients=4"],
            ConfigError,
            "jiang.holdout_clients must lie in 1..num_clients-1=3",
        ),
        (["finetune.unit=rounds"], ConfigError, "finetune.unit must be one of"),
        (["partition.a=400"], PartitionError, "class 0 has 40 samples"),
        (
            ["model.name=cnn", "dataset.image_size=32"],
            ConfigError,
            "model.name=cnn is the FedLab CNN",
        ),
        (
            ["partition.name=shards"],
            ConfigError,
            "partition.name must be one of ['fallah', 'dirichlet'], got 'shards'",
        ),
    ],
)
def test_impossible_settings_fail_before_ray(data_root, overrides, error, expected):
    with pytest.raises(error, match=re.escape(expected)):
        PACKAGE.prepare(config_of(data_root, *overrides))


PRESETS = sorted(p.stem for p in (REPO / "conf/experiment/perfedavg").glob("*.yaml"))


@pytest.mark.parametrize("preset", [None, *PRESETS])
def test_every_preset_parses(preset, monkeypatch):
    monkeypatch.setenv("PFL_DATA_ROOT", "x")
    overrides = [] if preset is None else [f"experiment=perfedavg/{preset}"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        config = to_plain(compose("perfedavg", overrides=overrides))
    settings = PACKAGE.check(config)
    assert settings.algorithm == config["algorithm"]
    assert settings.jiang.reptile.betas == config["jiang"]["reptile"]["betas"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["dataset.name=emnist"],
            "dataset.name=emnist lacks ['split', 'npz_orientation']: select the group",
        ),
        (
            ["dataset=emnist", "dataset.split=letterz"],
            "dataset.split must be one of ['letters', ",
        ),
        (["dataset.subset_fraction=0.5"], "dataset.subset_fraction=0.5 is not used"),
        (["local_steps=-1"], "local_steps must be an integer >= 0, got -1"),
        (["model.dropout=1"], "model.dropout must lie in [0, 1), got 1"),
        (["partition.test_ratio=0"], "partition.test_ratio must be > 0, got 0"),
        (
            ["algorithm=jiang", "jiang.reptile.betas=[0.9]"],
            "jiang.reptile.betas must be two numbers in [0, 1), got [0.9]",
        ),
        (["+model.width=3"], "model.width is not a setting here"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(data_root, overrides, expected):
    with pytest.raises(ConfigError) as info:
        PACKAGE.check(to_plain(config_of(data_root, *overrides)))
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_jiang_client_counts_bind_only_when_jiang_runs(data_root):
    config = to_plain(config_of(data_root, "jiang.holdout_clients=4"))
    assert PACKAGE.check(config).jiang.holdout_clients == 4
    expected = "jiang.holdout_clients must lie in 1..num_clients-1=3, got 4"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        PACKAGE.check({**config, "algorithm": "jiang"})


def test_the_cnn_on_emnist_letters_npz(data_root):
    prepared = PACKAGE.prepare(
        config_of(
            data_root,
            "dataset=emnist",
            "dataset.source=npz",
            "dataset.path=emnist_letters/emnist_letters.npz",
            "model.name=cnn",
            "partition.name=dirichlet",
            "partition.samples_per_client=40",
        )
    )
    assert prepared.data.data.num_classes == 26
    assert prepared.initial["classifier.4.weight"].shape == (26, 1024)


@pytest.mark.slow
def test_a_bad_setting_exits_with_one_line_and_no_ray(data_root, tmp_path):
    result = run_module(
        "perfedavg.main",
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path}",
        *SMALL,
        "delta=-1",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert "error: delta must be > 0, got -1" in result.stderr
    assert "Traceback" not in result.stderr and "ray" not in result.stderr.lower()
    assert not (tmp_path / "rounds.csv").exists()
