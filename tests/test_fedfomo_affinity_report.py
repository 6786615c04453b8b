"""fedfomo.affinity_report on a hand-worked three-client example."""

import numpy as np
import pytest

from fedfomo.affinity_report import AffinityReportError, label_overlap, report
from fedfomo.affinity_report import main as report_main


def test_overlap_and_grouping_by_hand():
    # Label distributions: (1/2, 1/2, 0, 0), (0, 1/2, 1/2, 0), (0, 0, 1/4, 3/4).
    # Clients 0 and 1 share class 1 (overlap 0.5), 1 and 2 overlap by min(1/2, 1/4)
    # on class 2, 0 and 2 not at all.
    counts = np.array(
        [[2.0, 2.0, 0.0, 0.0], [0.0, 2.0, 2.0, 0.0], [0.0, 0.0, 1.0, 3.0]]
    )
    overlap = label_overlap(counts)
    assert overlap[0, 1] == pytest.approx(0.5)
    assert overlap[1, 2] == pytest.approx(0.25)  # min(0.5, 0.25) on class 2
    assert overlap[0, 2] == pytest.approx(0.0)
    assert np.diag(overlap) == pytest.approx(np.ones(3))
    affinity = np.array([[0.1, -0.2, -0.6], [0.4, 0.1, -0.8], [-1.0, -0.4, 0.1]])
    r = report(affinity, counts, threshold=0.3)
    # overlapping (> 0.3): (0,1) and (1,0): mean of -0.2 and 0.4
    assert r.overlapping_pairs == 2 and r.overlapping_mean == pytest.approx(0.1)
    # others: -0.6, -0.8, -1.0, -0.4
    assert r.other_pairs == 4 and r.other_mean == pytest.approx(-0.7)
    assert (r.positive, r.entries) == (1, 6)
    with pytest.raises(AffinityReportError, match="same clients"):
        report(affinity, counts[:2], threshold=0.3)


def test_run_folder_is_read_and_a_missing_record_is_one_line(tmp_path, capsys):
    (tmp_path / "affinity.csv").write_text(
        "partition_id,p0,p1\n0,0.1,-0.5\n1,-0.3,0.1\n"
    )
    (tmp_path / "partition.csv").write_text(
        "partition_id,split,c0,c1\n0,train,3,1\n0,test,1,1\n1,train,1,3\n1,test,1,1\n"
    )
    report_main([str(tmp_path)])
    out = capsys.readouterr().out
    # train overlap of (3,1) and (1,3) is 0.5 > 0.25: both entries overlap, mean -0.4
    assert "overlap > 0.25: 2, mean affinity -0.400" in out
    assert "positive off-diagonal entries: 0 of 2" in out
    (tmp_path / "affinity.csv").unlink()
    with pytest.raises(SystemExit) as exc:
        report_main([str(tmp_path)])
    assert exc.value.code == 2
    assert "affinity.csv does not exist" in capsys.readouterr().err
