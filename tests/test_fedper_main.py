"""``python -m fedper.main`` end to end through the real Ray simulation."""

import json
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from fedper.main import PACKAGE
from pflcore.run.package import PREPARATION_ERRORS
from tests.fakedata import write_cifar10
from tests.mainrun import output_tail, read_run, run_module

SMALL = [
    "num_clients=4",
    "num_rounds=2",
    "local_epochs=1",
    "batch_size=16",
    "eval_batch_size=64",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, per_batch=40, test=40)
    return root


run_main = partial(run_module, "fedper.main")
CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for algorithm in ("fedavg", "fedper", "local", "fedavg_ft"):
        folder = tmp_path_factory.mktemp(algorithm)
        result = run_main(
            f"algorithm={algorithm}",
            f"dataset.root={data_root}",
            f"hydra.run.dir={folder}",
            *SMALL,
            cwd=folder,
        )
        assert result.returncode == 0, output_tail(result)
        out[algorithm] = folder
    return out


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fedavg", "fedper", "local", "fedavg_ft"])
def test_each_algorithm_records_every_round_and_client(runs, algorithm):
    rounds, clients, summary = read_run(runs[algorithm])
    assert rounds["round"].tolist() == [1, 2]
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert sorted(clients["partition_id"].unique()) == [0, 1, 2, 3]
    assert len(clients) == 2 * 4
    # The recorded mean is the mean of the per-client accuracies, pooled is total/total.
    last = clients[clients["round"] == 2]
    assert rounds["test_acc_mean"].iloc[-1] == pytest.approx(last["accuracy"].mean())
    assert rounds["test_acc_pooled"].iloc[-1] == pytest.approx(
        last["correct"].sum() / last["num_samples"].sum()
    )
    partition = pd.read_csv(runs[algorithm] / "partition.csv")
    class_columns = [c for c in partition.columns if c.startswith("c")]
    assert ((partition[class_columns] > 0).sum(axis=1) <= 4).all()


@pytest.mark.slow
def test_bytes_on_the_wire_follow_what_is_shared(runs):
    sent = {a: read_run(runs[a])[0]["bytes_sent"].sum() for a in runs}
    received = {a: read_run(runs[a])[0]["bytes_received"].sum() for a in runs}
    assert sent["fedavg_ft"] == sent["fedavg"]
    assert sent["local"] == 0 and received["local"] == 0
    assert 0 < sent["fedper"] < sent["fedavg"]
    assert 0 < received["fedper"] < received["fedavg"]
    summary = read_run(runs["fedper"])[2]
    assert summary["num_personal_tensors"] > 0


@pytest.mark.slow
def test_same_seed_same_partition_and_results(runs, data_root, tmp_path):
    result = run_main(
        "algorithm=fedper",
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path}",
        *SMALL,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    again, first = (
        pd.read_csv(tmp_path / "partition.csv"),
        pd.read_csv(runs["fedper"] / "partition.csv"),
    )
    pd.testing.assert_frame_equal(again, first)
    assert read_run(tmp_path)[0]["train_loss"].tolist() == pytest.approx(
        read_run(runs["fedper"])[0]["train_loss"].tolist(), rel=1e-4
    )


@pytest.mark.slow
def test_multirun_sweeps_two_points(data_root, tmp_path):
    result = run_main(
        "--multirun",
        "algorithm=fedavg,fedper",
        f"dataset.root={data_root}",
        f"hydra.sweep.dir={tmp_path}",
        "num_rounds=1",
        *SMALL[:1],
        *SMALL[2:],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == 2
    algorithms = {json.loads(p.read_text())["config"]["algorithm"] for p in summaries}
    assert algorithms == {"fedavg", "fedper"}
    plot = run_module(
        "pflcore.reports.plots",
        str(tmp_path),
        "--out",
        str(tmp_path / "fig.png"),
        cwd=tmp_path,
    )
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def bad_input_error(data_root: Path, overrides: list[str]) -> str:
    """The message ``python -m fedper.main`` would stop with, found in-process.

    Composes the config as the entry point does (Hydra's composition errors
    are the override errors) and runs ``fedper.main.prepare``, everything the
    entry point does before Ray starts.
    """
    base = [f"dataset.root={data_root}", *SMALL]
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="fedper", overrides=[*base, *overrides])
        PACKAGE.prepare(cfg)
    except (HydraException, *PREPARATION_ERRORS) as exc:
        return str(exc)
    raise AssertionError(f"{overrides} was accepted")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["num_roundz=3"], "num_roundz"),
        (["dataset=imagenet"], "dataset/imagenet"),
        (["dataset.name=imagenet"], "unknown dataset 'imagenet'"),
        (["dataset.classes_per_client=11"], "k=11 must lie in 1..10"),
        (["num_clients=500"], "500 clients but only 240 samples"),
        (["num_clients=200"], "too many clients"),
        (["clients_per_round=9"], "clients_per_round must lie in 1..num_clients=4"),
        (["model.num_head_layers=7"], "num_head_layers (K_P) must lie in 1..4"),
        (["dataset.root=/nonexistent/place"], "/nonexistent/place/cifar-10-batches-py"),
        (["model.base_buffers=locl"], "model.base_buffers must be aggregate or local"),
        (["lr=abc"], "lr must be > 0, got 'abc'"),
        pytest.param(
            ["client_resources.num_gpus=0.5"],
            "no CUDA device is visible",
            marks=pytest.mark.skipif(
                torch.cuda.is_available(), reason="a GPU share is valid with CUDA"
            ),
        ),
        (["client_resources.num_cpus=64"], "client_resources.num_cpus must lie in"),
        (["head_finetune_epochs=-1"], "head_finetune_epochs must be an integer >= 0"),
        (["algorithm=fedavg", "head_finetune_epochs=1"], "needs algorithm=fedper"),
        (["model.linear_base=maybe"], "model.linear_base must be true or false"),
        (["dataset.subset_fraction=0"], "dataset.subset_fraction must lie in (0, 1]"),
    ],
)
def test_bad_input_stops_before_ray_with_a_clear_message(
    data_root, overrides, expected
):
    assert expected in bad_input_error(data_root, overrides)


@pytest.mark.slow
def test_bad_input_exits_2_with_one_line_and_no_traceback(data_root, tmp_path):
    result = run_main(
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path}",
        *SMALL,
        "lr=abc",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: lr must be > 0, got 'abc'"], (
        output_tail(result)
    )
    assert "ActorPool" not in result.stdout + result.stderr
    assert not (tmp_path / "rounds.csv").exists()


@pytest.mark.slow
def test_a_failing_client_is_reported_and_recorded(data_root, tmp_path):
    # A huge learning rate makes the loss non-finite; the client raises.
    result = run_main(
        "lr=1e12",
        "momentum=0",
        f"dataset.root={data_root}",
        f"hydra.run.dir={tmp_path}",
        *SMALL,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "client" in result.stderr and "failed" in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "loss" in summary["error"]
