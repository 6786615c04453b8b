"""The shared protocol's runs: every method composes, on one data set and one budget."""

from __future__ import annotations

import json

import pytest
from fakeruns import write_run

from bench.shared_protocol import (
    chosen_point,
    figures,
    final_runs,
    load,
    make_run,
    tuning_runs,
)
from pflcore.config import to_plain
from pflcore.run.packages import compose, package_of

SPEC = load()
METHODS = list(SPEC["methods"])


def resolved(run) -> dict:
    config = to_plain(compose(run.package, list(run.overrides)))
    return package_of(run.package).resolve(config)


def passes_per_client(config: dict, style: str) -> float:
    """Expected passes over a client's training images, from what the package reads."""
    share = config["clients_per_round"] / config["num_clients"]
    if style == "epochs":
        per_round = config["local_epochs"]
    else:
        train = SPEC["data"]["train_per_client"]
        per_round = config["local_steps"] * config["batch_size"] / train
    return config["num_rounds"] * share * per_round


@pytest.mark.parametrize("partition", list(SPEC["partitions"]))
def test_every_method_composes_on_the_same_data_and_budget(partition):
    configs = {}
    for method in METHODS:
        point = tuple((k, v[0]) for k, v in SPEC["methods"][method]["grid"].items())
        configs[method] = resolved(make_run(SPEC, method, partition, 1, False, point))
    for method, config in configs.items():
        style = SPEC["methods"][method]["style"]
        passes = SPEC["budget"]["epochs_per_client"]
        assert passes_per_client(config, style) == pytest.approx(passes), method
        assert config["protocol"] == configs["fedavg"]["protocol"], method
        assert config["protocol"]["partition"] == partition
        assert config["dataset"]["path"] == "cifar10/cifar10_train.npz"
        assert config["dataset"]["crop_padding"] == 0 and not config["dataset"]["flip"]
        assert config["num_clients"] == 20 and config["batch_size"] == 30
        assert (config["momentum"], config["weight_decay"]) == (0.0, 0.0), method
        assert config["seed"] == 1 and config["tuning"] is False
        rounds = config["num_rounds"] / config["eval_every"]
        assert rounds == SPEC["budget"]["evaluations"], method
    for method in ("fedavg", "fedavg_ft", "local", "fedfomo", "ditto"):
        assert configs[method]["model"]["name"] == "lenet"
        assert configs[method]["lr_decay"] == 1.0
    assert configs["fedper"]["model"]["name"] == "lenet"
    assert configs["perfedavg_fo"]["model"]["name"] == "lenet"
    for method in ("pfedhn", "pfedhn_pc"):  # the hypernetwork's target is LeNet
        assert configs[method]["model"]["target"] == "cnn"
        assert configs[method]["model"]["n_kernels"] == 16
        assert configs[method]["clients_per_round"] == 1


def test_every_method_has_a_grid_of_six_points_on_the_tuning_seed():
    runs = tuning_runs(SPEC)
    for method in METHODS:
        for partition in SPEC["partitions"]:
            mine = [r for r in runs if (r.method, r.partition) == (method, partition)]
            assert len(mine) == 6, method
            assert all(r.tuning and r.seed == SPEC["seeds"]["tuning"] for r in mine)
    assert len({r.record for r in runs}) == len(runs)


def test_finals_wait_for_a_complete_grid(tmp_path):
    assert final_runs(SPEC, records=tmp_path) == []


def test_finals_follow_the_best_tuning_point_and_are_drawn(tmp_path):
    # a complete grid for FedAvg on one partition: the 4th learning rate scores best
    for i, run in enumerate(r for r in tuning_runs(SPEC) if r.method == "fedavg"):
        if run.partition != "classes":
            continue
        correct = 9 if i == 3 else 5
        write_run(
            tmp_path / run.record, seed=0, correct=[correct] * 4, samples=[10] * 4
        )
    finals = final_runs(SPEC, records=tmp_path)
    assert {r.record for r in finals} == {
        f"shared_classes/seed{s}/fedavg" for s in SPEC["seeds"]["final"]
    }
    assert all(dict(r.point) == {"lr": 0.04} for r in finals)
    assert all("lr=0.04" in r.overrides for r in finals)
    config = {"clients_per_round": 5, "num_clients": 20, "local_epochs": 1}
    for s in SPEC["seeds"]["final"]:
        write_run(tmp_path / "runs" / f"shared_classes/seed{s}/fedavg", seed=s,
                  correct=[6, 7, 8, 9], samples=[10] * 4, config=config)  # fmt: skip
    written = figures(SPEC, records=tmp_path / "runs")
    assert [p.name for p in written] == ["shared_classes.png"]
    assert written[0].is_file()


def test_a_diverged_point_counts_as_recorded_and_is_never_chosen(tmp_path):
    grid = [
        r for r in tuning_runs(SPEC) if (r.method, r.partition) == ("ditto", "classes")
    ]
    for i, run in enumerate(grid):  # point 4 scores best of those that finished
        write_run(
            tmp_path / run.record,
            seed=0,
            correct=[9 if i == 4 else 5] * 4,
            samples=[10] * 4,
        )
    diverged = {"status": "failed", "error": "NonFiniteLossError: loss became nan"}

    def diverge(run):
        summary = tmp_path / run.record / "summary.json"
        summary.write_text(json.dumps({**json.loads(summary.read_text()), **diverged}))

    diverge(grid[0])
    assert chosen_point(SPEC, "ditto", "classes", tmp_path) == grid[4].point
    diverge(grid[4])  # the best point diverges: the next best is chosen
    assert chosen_point(SPEC, "ditto", "classes", tmp_path) == grid[1].point
    for run in grid:  # every point diverged: nothing to choose
        diverge(run)
    assert chosen_point(SPEC, "ditto", "classes", tmp_path) is None


def test_tables_are_declared_from_the_records(tmp_path):
    import tomllib

    from bench.shared_tables import MARKER, write
    from pflcore.reports.render import render
    from pflcore.reports.spec import parse

    runs = tmp_path / "runs"
    grid = [
        r for r in tuning_runs(SPEC) if (r.method, r.partition) == ("ditto", "classes")
    ]
    for i, run in enumerate(grid):  # point 2 is best; point 5 diverged
        extra = {"error": "NonFiniteLossError: nan"} if i == 5 else {}
        write_run(runs / run.record, seed=0, correct=[8 if i == 2 else 5] * 4,
                  samples=[10] * 4, status="failed" if i == 5 else "completed",
                  extra_summary=extra)  # fmt: skip
    tables, doc = tmp_path / "tables.toml", tmp_path / "TUNING.md"
    settings = '[settings]\nruns = "runs"\nout = "out"\ndocuments = []\n'
    tables.write_text(settings + "\n" + MARKER + "\n[[table]]\nname = 'stale'\n")
    assert write(SPEC, runs, tables, doc) == ["shared_classes_tuning_ditto"]
    catalog = parse(tomllib.loads(tables.read_text()))
    (table,) = catalog.tables
    assert table.chosen == "Ditto, lr = 0.03, ditto.lam = 0.1"  # grid order: lr, lam
    assert [row.runs for row in table.rows] == [
        r.record.replace("seed0", "seed*") for r in grid
    ]
    text = render(table, runs).markdown
    assert "| Ditto, lr = 0.1, ditto.lam = 1.0 | diverged in round 6 |" in text
    assert "<!-- table:shared_classes_tuning_ditto -->" in doc.read_text()
    # once every method has a final run on a partition, its table is declared too
    for method in METHODS:
        write_run(runs / f"shared_classes/seed0/{method}", seed=0, correct=[5] * 4,
                  samples=[10] * 4)  # fmt: skip
    assert write(SPEC, runs, tables, doc)[0] == "shared_classes"
    final = parse(tomllib.loads(tables.read_text())).tables[0]
    assert (final.reference, final.also_versus, final.local) == (
        "FedAvg + FT", "Local", "Local")  # fmt: skip
    assert len(final.rows) == len(METHODS)


def test_one_partition_can_be_listed_alone(capsys):
    from bench.shared_protocol import main

    main(["list", "--partition", "dirichlet"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 6 * len(METHODS)
    assert all("_dirichlet" in line.split()[1] for line in lines)
    with pytest.raises(SystemExit) as stop:
        main(["list", "--partition", "iid"])
    assert stop.value.code == 2
    assert (
        "--partition must be one of ['classes', 'dirichlet']" in capsys.readouterr().err
    )


def test_finals_go_seed_by_seed_and_ties_go_to_the_first_grid_point(tmp_path):
    for run in tuning_runs(SPEC):
        if run.partition == "classes" and run.method in ("fedavg", "local"):
            # every point scores the same: the first learning rate must be chosen
            write_run(tmp_path / run.record, seed=0, correct=[5] * 4, samples=[10] * 4)
    finals = final_runs(SPEC, records=tmp_path)
    assert [(r.seed, r.method) for r in finals] == [
        (s, m) for s in SPEC["seeds"]["final"] for m in ("fedavg", "local")
    ]
    first = SPEC["methods"]["fedavg"]["grid"]["lr"][0]
    assert all(dict(r.point) == {"lr": first} for r in finals)
