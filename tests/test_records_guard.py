"""The refactor guard compares records exactly, wall-time columns aside."""

from pathlib import Path

from bench.records_guard import compare


def write(folder: Path, rounds: str, clients: str) -> None:
    folder.mkdir(parents=True)
    (folder / "rounds.csv").write_text(rounds)
    (folder / "clients.csv").write_text(clients)


def test_wall_time_may_differ_nothing_else(tmp_path):
    clients = "round,partition_id,accuracy\n1,0,0.5\n1,1,0.25\n"
    write(
        tmp_path / "a" / "run",
        "round,time_s,round_s,test_acc_mean\n1,3.2,3.2,0.375\n",
        clients,
    )
    write(
        tmp_path / "b" / "run",
        "round,time_s,round_s,test_acc_mean\n1,9.9,9.9,0.375\n",
        clients,
    )
    assert compare(tmp_path / "a", tmp_path / "b") == []
    write(
        tmp_path / "c" / "run",
        "round,time_s,round_s,test_acc_mean\n1,3.2,3.2,0.375\n",
        "round,partition_id,accuracy\n1,0,0.5\n1,1,0.2500001\n",
    )
    (problem,) = compare(tmp_path / "a", tmp_path / "c")
    assert "clients.csv: column accuracy, row 1: 0.25 != 0.2500001" in problem
    assert compare(tmp_path / "a", tmp_path / "missing")[0].endswith(
        "missing in " + str(tmp_path / "missing")
    )
