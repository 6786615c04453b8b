"""``python -m ditto.main``: its settings, FedFomo's data, and a real sweep."""

import copy
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from ditto.main import PACKAGE as DITTO
from fedfomo.main import PACKAGE as FEDFOMO
from pflcore.config import ConfigError, to_plain
from pflcore.config.settings import leaf_fields
from tests.mainrun import REPO, output_tail, read_run, run_module

SMALL = ["num_clients=5", "partition.pool_fraction=0.5"]


def composed(package: str, *overrides: str, preset: str = "quick") -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(package, overrides=[f"experiment={package}/{preset}", *overrides])
    return to_plain(cfg)


def test_the_package_is_at_most_300_lines():
    """Issue 32's bound on the package's code (tests and configs aside)."""
    lines = sum(len(f.read_text().splitlines()) for f in (REPO / "ditto").glob("*.py"))
    assert lines <= 300, f"ditto/*.py holds {lines} lines"


def test_the_schema_is_fedfomos_without_its_server_with_ditto_lambda():
    ditto = {path for path, _ in leaf_fields(DITTO.schema)}
    fedfomo = {path for path, _ in leaf_fields(FEDFOMO.schema)}
    assert ditto - fedfomo == {"ditto.lam"}
    assert fedfomo - ditto == {p for p in fedfomo if p.startswith("fomo.")}
    config = DITTO.resolve(composed("ditto"))
    assert config["algorithm"] == "ditto" and config["ditto"] == {"lam": 1.0}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ditto.lam", -0.5, "ditto.lam must be >= 0, got -0.5"),
        ("ditto.lam", float("nan"), "ditto.lam must be >= 0, got nan"),
        ("ditto.lam", "1", "ditto.lam must be >= 0, got '1'"),
        ("algorithm", "fedfomo", "algorithm must be one of"),
        ("ditto.personal_lr", 0.1, "ditto.personal_lr is not a setting here"),
        ("fomo", {"num_candidates": 5}, "fomo is not a setting here"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line_naming_it(key, value, message):
    config = copy.deepcopy(composed("ditto"))
    *groups, leaf = key.split(".")
    node = config
    for group in groups:
        node = node[group]
    node[leaf] = value
    with pytest.raises(ConfigError) as error:
        DITTO.resolve(config)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_fedfomos_checks_of_the_partition_apply_in_one_line():
    config = composed(
        "ditto", "partition.kind=latent", "partition.num_distributions=3"
    )  # 10 clients
    with pytest.raises(ConfigError, match=r"partition\.num_distributions must divide"):
        DITTO.prepare(config)


@pytest.mark.parametrize(
    ("algorithm", "fedfomo_algorithm"),
    [("ditto", "fedavg"), ("fedavg_ft", "fedavg_ft"), ("local", "local")],
)
def test_the_data_partition_and_model_are_fedfomos(algorithm, fedfomo_algorithm):
    ours = DITTO.prepare(composed("ditto", f"algorithm={algorithm}", *SMALL))
    theirs = FEDFOMO.prepare(
        composed("fedfomo", f"algorithm={fedfomo_algorithm}", *SMALL)
    )
    np.testing.assert_array_equal(ours.data.class_counts(), theirs.data.class_counts())
    for split in ("train", "val", "test"):
        for a, b in zip(
            getattr(ours.data, split), getattr(theirs.data, split), strict=True
        ):
            np.testing.assert_array_equal(a, b)
    assert list(ours.initial.keys()) == list(theirs.initial.keys())
    for key in ours.initial:
        assert np.array_equal(ours.initial[key].numpy(), theirs.initial[key].numpy())
    assert (len(ours.initial) == 0) == (algorithm == "local")  # Local sends nothing
    assert ours.summary == {**theirs.summary, "ditto_lambda": 1.0}
    assert ours.config["algorithm"] == algorithm and "fomo" not in ours.config
    fedavg_ft = DITTO.recorder_options(ours)["extra_evals"]
    assert fedavg_ft == (("before",) if algorithm == "fedavg_ft" else ())


def test_the_paper_preset_is_fedfomos_pathological_run():
    ours = composed("ditto", preset="paper_pathological")
    theirs = composed("fedfomo", preset="paper_pathological")
    assert ours.pop("ditto") == {"lam": 1.0} and "fomo" in theirs
    for config in (ours, theirs):
        config.pop("algorithm")
        config.pop("fomo", None)
    assert ours == theirs
    assert ours["partition"]["kind"] == "pathological"
    assert (ours["num_rounds"], ours["local_epochs"], ours["lr"]) == (20, 5, 0.1)


def check_quick_sweep(folder: Path) -> None:
    """What ``python -m ditto.main --multirun experiment=ditto/quick`` leaves."""
    partitions, summaries = [], {}
    for algorithm in ("ditto", "fedavg", "local"):
        rounds, clients, summary = read_run(folder / algorithm)
        assert summary["status"] == "completed", summary.get("error")
        assert rounds["round"].tolist() == [1, 2, 3, 4, 5]
        assert sorted(clients["partition_id"].unique()) == list(range(10))
        assert len(clients) == 5 * 10  # every client tested every round
        assert summary["ditto_lambda"] == 1.0
        partitions.append(pd.read_csv(folder / algorithm / "partition.csv"))
        summaries[algorithm] = rounds
    for other in partitions[1:]:
        pd.testing.assert_frame_equal(partitions[0], other)
    ditto, fedavg = summaries["ditto"], summaries["fedavg"]
    # the same uploads, so the same global models and training losses as FedAvg
    np.testing.assert_array_equal(ditto["train_loss"], fedavg["train_loss"])
    assert ditto["bytes_received"].tolist() == fedavg["bytes_received"].tolist()
    assert summaries["local"]["bytes_sent"].sum() == 0


@pytest.mark.slow
def test_the_quick_sweep_runs_ditto_fedavg_and_local_on_one_partition(tmp_path):
    run = partial(run_module, "ditto.main", cwd=tmp_path)
    result = run(
        "--multirun", "experiment=ditto/quick", f"hydra.sweep.dir={tmp_path / 'q'}"
    )
    assert result.returncode == 0, output_tail(result)
    check_quick_sweep(tmp_path / "q")
    for algorithm in ("ditto", "fedavg", "local"):  # one summary line per run
        assert f"{algorithm}: final mean client accuracy" in output_tail(result, 10**6)
