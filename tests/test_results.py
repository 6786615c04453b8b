"""The additive pflcore pieces pFedHN uses: extra rounds.csv columns, pooled plots."""

from __future__ import annotations

import pandas as pd
import pytest

from pflcore.records.results import ClientEval, RunRecorder
from pflcore.reports.plots import client_band, find_runs, plot_runs, pooled_band


def evals(correct: list[int], total: list[int]) -> list[ClientEval]:
    return [
        ClientEval(partition_id=j, correct=c, loss_sum=1.0, num_samples=n)
        for j, (c, n) in enumerate(zip(correct, total, strict=True))
    ]


def test_extra_columns_follow_the_shared_ones(tmp_path):
    recorder = RunRecorder(
        tmp_path, {"seed": 0, "algorithm": "pfedhn"}, extra_fields=("phase", "val")
    )
    recorder.log_train(0.5, 1)
    recorder.end_round(1)
    recorder.log_eval(evals([1, 9], [10, 10]))
    recorder.log_extra(phase="train", val=0.25)
    recorder.end_round(2)
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert list(rounds.columns[-2:]) == ["phase", "val"]
    assert rounds["val"].isna().tolist() == [True, False]  # only where logged
    assert rounds["val"].iloc[1] == 0.25 and rounds["phase"].iloc[1] == "train"
    assert rounds["test_acc_pooled"].iloc[1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not declared"):
        recorder.log_extra(other=1)
    with pytest.raises(ValueError, match="clash"):
        RunRecorder(tmp_path / "b", {}, extra_fields=("test_acc_mean",))


def test_pooled_plot_reads_pooled_accuracy(tmp_path):
    recorder = RunRecorder(tmp_path / "run", {"seed": 0, "algorithm": "pfedhn"})
    # Per-client accuracies 0.1 and 0.9 (mean 0.5), pooled (1 + 90) / 110.
    recorder.log_eval(evals([1, 90], [10, 100]))
    recorder.end_round(1)
    recorder.write_summary("completed")
    out = plot_runs([tmp_path], tmp_path / "pooled.png", metric="pooled", ymin=0.5)
    assert out.stat().st_size > 0
    (run,) = find_runs([tmp_path])
    assert pooled_band(run)["mean"].iloc[0] == pytest.approx(91 / 110)
    assert client_band(run)["mean"].iloc[0] == pytest.approx(0.5)


def test_worst_ten_percent_mean():
    import numpy as np

    from pflcore.records.results import worst_share_mean

    acc = np.array([0.9, 0.5, 0.8, 0.7, 0.95, 0.6, 0.85, 0.75, 0.65, 0.99, 0.3])
    assert worst_share_mean(acc, 0.1) == pytest.approx((0.3 + 0.5) / 2)  # ceil(1.1) = 2
    assert worst_share_mean(acc[:5], 0.1) == pytest.approx(0.5)
