"""The Jiang et al. table: one row per finished run, the paper's number by K and E."""

import json

import pytest

from perfedavg.jiang_table import COLUMNS, NoJiangRunsError, find_rows, main


def write_summary(
    folder, k: int, epochs: int, reptile: int, reached, seed=3, acc=0.5, **extra
) -> None:
    folder.mkdir(parents=True)
    summary = {
        "status": "completed",
        "wall_time_s": 61.6,
        "config": {
            "clients_per_round": k,
            "local_epochs": epochs,
            "seed": seed,
            "averaging": "samples",
            "jiang": {"reptile": {"rounds": reptile, **extra}},
        },
        "personalization": {
            "initial_loss": 1.23456,
            "initial_acc": acc,
            "initial_acc_std": 0.125,
            "personalized_loss": 0.5,
            "personalized_acc": 0.66667,
            "personalized_acc_std": 0.1,
            "rounds_to_0.8_initial": reached,
        },
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_the_papers_number_stands_beside_fedavg_only_runs(tmp_path):
    write_summary(tmp_path / "a", 5, 2, 5, None)  # with Reptile: our extension
    write_summary(tmp_path / "b", 5, 2, 0, None)  # FedAvg alone: the paper's rows
    write_summary(tmp_path / "c", 20, 2, 5, 12, optimizer="server_adam")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "summary.json").write_text(json.dumps({"config": {}}))
    rows = find_rows([str(tmp_path)], {"5/2": "74.73 -> 82.92"}, "cmd")
    by_pipeline = {
        (r.values["clients per round"], r.values["pipeline"]): r.values for r in rows
    }
    assert set(by_pipeline) == {
        ("5", "FedAvg (paper's Table 1)"),
        ("5", "FedAvg + 5 Reptile rounds, client adam (extension)"),
        ("20", "FedAvg + 5 Reptile rounds, server adam (extension)"),
    }
    fedavg = by_pipeline[("5", "FedAvg (paper's Table 1)")]
    assert fedavg["paper: initial -> personalized"] == "74.73 -> 82.92"
    for key, values in by_pipeline.items():
        if "Reptile" in key[1]:
            assert values["paper: initial -> personalized"] == "-"
    assert set(fedavg) == set(COLUMNS)
    assert fedavg["initial acc"] == "50.00 % (12.5 across clients)"
    assert fedavg["personalized acc"] == "66.67 % (10.0 across clients)"
    assert fedavg["initial loss"] == "1.2346"
    assert fedavg["rounds to 0.8 (initial)"] == "not reached"
    assert (
        by_pipeline[("20", "FedAvg + 5 Reptile rounds, server adam (extension)")][
            "rounds to 0.8 (initial)"
        ]
        == "12"
    )
    assert (fedavg["seeds"], fedavg["wall s"], fedavg["command"]) == ("3", "62", "cmd")
    assert fedavg["averaging"] == "samples"


def test_seeds_of_one_cell_pool_into_mean_and_std(tmp_path):
    for seed, acc in ((0, 0.5), (1, 0.7), (2, 0.6)):
        write_summary(tmp_path / f"s{seed}", 5, 5, 0, None, seed=seed, acc=acc)
    (row,) = find_rows([str(tmp_path)], {}, "")
    # mean 0.6, population std sqrt(((0.1)^2 + (0.1)^2 + 0) / 3) = 0.0816
    assert row.values["initial acc"] == "60.00 ± 8.16 %"
    assert row.values["seeds"] == "0, 1, 2"


def test_no_finished_run_and_a_bad_paper_argument_fail_clearly(tmp_path, capsys):
    with pytest.raises(NoJiangRunsError, match="no run results"):
        find_rows([str(tmp_path)], {}, "")
    write_summary(tmp_path / "a", 5, 2, 5, None)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--paper", "5/2"])
    assert exit_info.value.code == 2
    assert "--paper expects LABEL=TEXT" in capsys.readouterr().err
    main([str(tmp_path), "--out", str(tmp_path / "t.md")])
    assert (tmp_path / "t.md").read_text().count("\n") == 3
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("clients per")
