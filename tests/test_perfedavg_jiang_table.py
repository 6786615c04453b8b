"""The Jiang et al. table: one row per finished run, the paper's number by K and E."""

import json

import pytest

from perfedavg.jiang_table import COLUMNS, NoJiangRunsError, find_rows, main


def write_summary(folder, k: int, epochs: int, reptile: int, reached) -> None:
    folder.mkdir(parents=True)
    summary = {
        "status": "completed",
        "wall_time_s": 61.6,
        "config": {
            "clients_per_round": k,
            "local_epochs": epochs,
            "seed": 3,
            "jiang": {"reptile": {"rounds": reptile}},
        },
        "personalization": {
            "initial_loss": 1.23456,
            "initial_acc": 0.5,
            "initial_acc_std": 0.125,
            "personalized_loss": 0.5,
            "personalized_acc": 0.66667,
            "personalized_acc_std": 0.1,
            "rounds_to_0.8_initial": reached,
        },
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_rows_carry_the_papers_number_for_their_k_and_e_only(tmp_path):
    write_summary(tmp_path / "a", 5, 2, 5, None)
    write_summary(tmp_path / "b", 5, 2, 0, None)  # no Reptile: not the paper's pipeline
    write_summary(tmp_path / "c", 20, 2, 5, 12)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "summary.json").write_text(json.dumps({"config": {}}))
    rows = find_rows([str(tmp_path)], {"5/2": "74.73 -> 82.92"}, "cmd")
    assert [r.values["paper: initial -> personalized"] for r in rows] == [
        "74.73 -> 82.92",
        "-",
        "-",
    ]
    first = rows[0].values
    assert set(first) == set(COLUMNS)
    assert first["initial acc (std)"] == "50.00 % (12.5)"
    assert first["personalized acc (std)"] == "66.67 % (10.0)"
    assert first["initial loss"] == "1.2346"
    assert first["rounds to 0.8 (initial)"] == "not reached"
    assert rows[2].values["rounds to 0.8 (initial)"] == "12"
    assert (first["seed"], first["wall s"], first["command"]) == ("3", "62", "cmd")


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
