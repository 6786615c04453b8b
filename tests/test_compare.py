"""pflcore.reports.compare: paired per-client differences on a hand-worked example."""

import pytest

from pflcore.reports.compare import CompareError, compare
from pflcore.reports.compare import main as compare_main

PARTITION = "partition_id,split,c0,c1\n0,train,5,0\n1,train,0,5\n2,train,3,2\n"


def write_run(folder, rows, partition=PARTITION):
    folder.mkdir()
    lines = ["round,partition_id,accuracy,loss,correct,num_samples"]
    lines += [f"{r},{p},{a},0.1,1,2" for r, p, a in rows]
    (folder / "clients.csv").write_text("\n".join(lines) + "\n")
    (folder / "partition.csv").write_text(partition)
    return folder


def test_differences_counts_and_last_rounds_by_hand(tmp_path):
    # Round 2 is the last: ref 0.90 0.80 0.50, other 0.85 0.80 0.60 ->
    # differences +5, 0, -10 points, mean -5/3; higher on 1, equal on 1, lower on 1.
    ref = write_run(
        tmp_path / "ref",
        [(1, 0, 0.6), (1, 1, 0.6), (1, 2, 0.6), (2, 0, 0.9), (2, 1, 0.8), (2, 2, 0.5)],
    )
    other = write_run(
        tmp_path / "other",
        [(1, 0, 0.3), (1, 1, 0.3), (1, 2, 0.3), (2, 0, 0.85), (2, 1, 0.8), (2, 2, 0.6)],
    )
    c = compare(ref, other, last_k=2)
    assert c.mean_difference == pytest.approx(-5 / 3)
    # sample std of (+5, 0, -10): sqrt((6.67**2 + 1.67**2 + 8.33**2) / 2) = 7.638;
    # 95 % t quantile with 2 df: 4.30265 (printed table)
    half = 4.30265 * 7.637626 / 3**0.5
    assert c.ci_low == pytest.approx(-5 / 3 - half, abs=1e-3)
    assert c.ci_high == pytest.approx(-5 / 3 + half, abs=1e-3)
    assert c.word == "tie"
    assert ": tie (higher on 1/3 clients" in c.line()
    assert (c.higher, c.equal, c.lower) == (1, 1, 1)
    assert c.min_difference == pytest.approx(-10) and c.max_difference == pytest.approx(
        5
    )
    # round means: ref 60 and 73.33 -> 66.67; other 30 and 75 -> 52.5
    assert c.reference_last_k == pytest.approx(200 / 3)
    assert c.other_last_k == pytest.approx(52.5)
    assert compare(ref, other, last_k=1).reference_last_k == pytest.approx(220 / 3)


def test_different_partitions_and_bad_input_fail_in_one_line(tmp_path, capsys):
    rows = [(1, 0, 0.5), (1, 1, 0.5), (1, 2, 0.5)]
    ref = write_run(tmp_path / "ref", rows)
    moved = write_run(tmp_path / "moved", rows, PARTITION.replace("3,2", "2,3"))
    with pytest.raises(CompareError, match="not on the same partition"):
        compare(ref, moved)
    fewer = write_run(tmp_path / "fewer", rows[:2])
    with pytest.raises(CompareError, match="evaluated different clients"):
        compare(ref, fewer)
    with pytest.raises(SystemExit) as exc:
        compare_main([str(ref), str(tmp_path / "none")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    with pytest.raises(CompareError, match="at least 1"):
        compare(ref, ref, last_k=0)


def test_extra_evaluation_is_compared_from_its_own_column(tmp_path, capsys):
    ref = write_run(tmp_path / "ref", [(1, 0, 0.9), (1, 1, 0.7), (1, 2, 0.8)])
    ft = tmp_path / "ft"
    ft.mkdir()
    (ft / "partition.csv").write_text(PARTITION)
    (ft / "clients.csv").write_text(
        "round,partition_id,accuracy,before_accuracy\n"
        "1,0,0.9,0.5\n1,1,0.7,0.4\n1,2,0.8,0.6\n"
    )
    # before: 0.5 0.4 0.6 -> ref higher by 40, 30, 20 points, mean 30
    c = compare(ref, ft, last_k=1, extra="before")
    assert c.mean_difference == pytest.approx(30) and c.higher == 3
    assert c.other == "ft (before)" and c.other_last_k == pytest.approx(50)
    compare_main([str(ref), str(ft), str(ref), "--extra", "before"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # ft, ft (before), ref; ref has no before_accuracy
    assert "ft (before)" in lines[1] and "+30.00 points" in lines[1]
