import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from pflcore.reports.plots import Run, label_of, varying_keys
from pflcore.reports.tables import main as tables_main


def write_run(
    folder: Path, algorithm: str, seed: int, acc: float | None, status="completed"
):
    folder.mkdir(parents=True)
    (folder / "rounds.csv").write_text("round,test_acc_mean\n1,0.5\n")
    summary = {
        "status": status,
        "rounds_completed": 1,
        "wall_time_s": 120.0 + seed * 60,
        "seed": seed,
        "hardware": "2-core CPU",
        "config": {"algorithm": algorithm, "seed": seed, "num_clients": 4},
    }
    if acc is not None:
        summary["final"] = {"test_acc_mean": acc}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_rows_pool_seeds_and_sit_beside_the_paper_number(tmp_path):
    write_run(tmp_path / "a0", "fedper", 0, 0.80)
    write_run(tmp_path / "a1", "fedper", 1, 0.90)
    write_run(tmp_path / "b0", "fedavg", 0, 0.25, status="failed")
    out = tmp_path / "t.md"
    tables_main(
        [
            str(tmp_path),
            "--out",
            str(out),
            "--metric",
            "final.test_acc_mean",
            "--setting",
            "CIFAR-10 k=4",
            "--command",
            "python -m fedper.main --multirun x=1",
            "--paper",
            "fedper=85.0 (Fig. 2)",
        ]
    )
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    by_method = {r["method"]: r for r in rows}
    # mean 85.00, sample std sqrt(2 * 5.00**2 / 1) = 7.07 over the two seeds
    assert by_method["fedper"]["ours"] == "85.00 ± 7.07"
    assert by_method["fedper"]["seeds"] == "0, 1"
    assert by_method["fedper"]["paper"] == "85.0 (Fig. 2)"
    assert by_method["fedper"]["wall_time"] == "2.5 min"  # median of 2 and 3 min
    assert by_method["fedavg"]["ours"] == "25.00 (1 of 1 runs unfinished: failed)"
    assert by_method["fedavg"]["paper"] == "-"
    markdown = out.read_text()
    assert "mean ± sample std (ddof = 1) over the seeds" in markdown
    assert "`python -m fedper.main --multirun x=1`" in markdown
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table_lines) == 4  # header, rule, two rows


def test_missing_metric_is_reported_not_invented(tmp_path):
    write_run(tmp_path / "a0", "local", 0, None)
    tables_main(
        [
            str(tmp_path),
            "--out",
            str(tmp_path / "t.md"),
            "--metric",
            "final.test_acc_mean",
            "--setting",
            "s",
            "--command",
            "c",
        ]
    )
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert rows[0]["ours"] == "not recorded"


def test_empty_folder_and_bad_paper_argument_fail_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        tables_main(
            [
                str(tmp_path),
                "--out",
                str(tmp_path / "t.md"),
                "--metric",
                "m",
                "--setting",
                "s",
                "--command",
                "c",
            ]
        )
    assert exc.value.code == 2
    assert "no run results" in capsys.readouterr().err
    write_run(tmp_path / "a0", "local", 0, 0.5)
    with pytest.raises(SystemExit):
        tables_main(
            [
                str(tmp_path),
                "--out",
                str(tmp_path / "t.md"),
                "--metric",
                "m",
                "--setting",
                "s",
                "--command",
                "c",
                "--paper",
                "nolabel",
            ]
        )
    assert "LABEL=TEXT" in capsys.readouterr().err


def test_labels_name_settings_by_their_shortest_unambiguous_key(tmp_path):
    def run(algorithm: str, hn_lr: float, head_lr: float) -> Run:
        config = {
            "algorithm": algorithm,
            "hn.lr": hn_lr,
            "head.lr": head_lr,
            "model.target": "cnn",
        }
        return Run(tmp_path, config, pd.DataFrame(), pd.DataFrame())

    runs = [run("pfedhn", 0.01, 0.1), run("pfedhn_pc", 0.05, 0.2)]
    keys = varying_keys(runs)
    assert keys == ["algorithm", "head.lr", "hn.lr"]
    assert label_of(runs[1], keys) == "pfedhn_pc, head.lr=0.2, hn.lr=0.05"
    assert label_of(runs[0], ["algorithm", "model.target"]) == "pfedhn, target=cnn"


def test_a_resumed_run_is_one_curve_with_its_seeds(tmp_path):
    def run(seed: int, resume: str | None, checkpoint_every: int) -> Run:
        config = {
            "algorithm": "fedfomo",
            "seed": seed,
            "resume": resume,
            "checkpoint_every": checkpoint_every,
        }
        return Run(tmp_path, config, pd.DataFrame(), pd.DataFrame())

    runs = [run(0, None, 0), run(2, "<local path>", 1)]
    assert varying_keys(runs) == []


def test_a_killed_run_shows_as_interrupted(tmp_path):
    import socket

    write_run(tmp_path / "k", "fedper", 0, 0.5, status="running")
    path = tmp_path / "k" / "summary.json"
    summary = json.loads(path.read_text())
    # this host, a process id that no longer exists (the maximum pid is far below)
    summary.update(host=socket.gethostname(), pid=2**22 + 12345)
    path.write_text(json.dumps(summary))
    out = tmp_path / "t.md"
    tables_main(
        [
            str(tmp_path),
            "--out",
            str(out),
            "--metric",
            "final.test_acc_mean",
            "--command",
            "c",
        ]
    )
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert rows[0]["ours"] == "50.00 (1 of 1 runs unfinished: interrupted)"


def test_extra_evaluation_gets_its_own_row_after_its_group(tmp_path):
    # FedAvg + FT records FedAvg's global model as before_*: 0.50 and 0.60 over two
    # seeds (mean 55.00, sample std 7.07), beside 0.80 and 0.90 after fine-tuning.
    for seed, before, after in [(0, 0.50, 0.80), (1, 0.60, 0.90)]:
        folder = tmp_path / f"ft{seed}"
        write_run(folder, "fedavg_ft", seed, after)
        summary = json.loads((folder / "summary.json").read_text())
        summary["final"]["before_acc_mean"] = before
        (folder / "summary.json").write_text(json.dumps(summary))
    write_run(tmp_path / "fomo0", "fedfomo", 0, 0.70)
    write_run(tmp_path / "fomo1", "fedfomo", 1, 0.70)
    args = [str(tmp_path), "--out", str(tmp_path / "t.md"), "--setting", "s"]
    args += ["--command", "c", "--paper", "fedavg_ft=40 (T1)"]
    tables_main([*args, "--metric", "final.test_acc_mean", "--extra", "before=fedavg"])
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    methods = [r["method"] for r in rows]
    assert methods.index("fedavg") == methods.index("fedavg_ft") + 1
    by_method = {r["method"]: r for r in rows}
    assert by_method["fedavg"]["ours"] == "55.00 ± 7.07"
    assert by_method["fedavg_ft"]["ours"] == "85.00 ± 7.07"
    assert by_method["fedavg"]["paper"] == "-"  # not fedavg_ft's paper number
    assert len(rows) == 3  # no extra row for FedFomo, which has no before_*


def test_extra_evaluation_needs_a_test_metric_and_a_label(tmp_path, capsys):
    write_run(tmp_path / "a0", "fedavg_ft", 0, 0.5)
    args = [str(tmp_path), "--out", str(tmp_path / "t.md"), "--command", "c"]
    for metric, extra in [
        ("best_test_acc_mean", "before=x"),
        ("final.test_acc_mean", "before="),
    ]:
        with pytest.raises(SystemExit) as exc:
            tables_main([*args, "--metric", metric, "--extra", extra])
        assert exc.value.code == 2
        assert "--extra" in capsys.readouterr().err
