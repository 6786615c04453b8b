"""The statistics and words of the published tables, against hand-worked values."""

from __future__ import annotations

import math

import pytest

from pflcore.reports.stats import (
    Counts,
    Interval,
    mean_sd,
    paper_verdict,
    t_interval,
    t_quantile,
    verdict,
)

# Two-sided 95 % Student-t quantiles from a printed table (5 decimals).
T_TABLE = {1: 12.70620, 2: 4.30265, 3: 3.18245, 10: 2.22814, 14: 2.14479}


def test_sample_std_uses_n_minus_one():
    mean, sd = mean_sd([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    # squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3
    assert sd == pytest.approx(math.sqrt(5 / 3))
    assert mean_sd([0.7]) == (0.7, None)
    with pytest.raises(ValueError):
        mean_sd([])


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantiles_match_the_printed_table(df):
    assert t_quantile(df) == pytest.approx(T_TABLE[df], abs=1e-5)


def test_t_interval_by_hand():
    # values 1, 2, 3: mean 2, s = 1, n = 3: 2 ± 4.30265 / sqrt(3)
    interval = t_interval([1.0, 2.0, 3.0])
    half = T_TABLE[2] / math.sqrt(3)
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.low == pytest.approx(2 - half, abs=1e-5)
    assert interval.high == pytest.approx(2 + half, abs=1e-5)
    single = t_interval([0.4])
    assert (single.low, single.high, single.n) == (None, None, 1)


def test_words_follow_one_rule_in_both_directions():
    assert verdict(Interval(0.3, 0.1, 0.5, 5)) == "above"
    assert verdict(Interval(-0.3, -0.5, -0.1, 5)) == "below"
    assert verdict(Interval(0.05, -0.1, 0.2, 5)) == "tie"
    assert (
        verdict(Interval(0.0, 0.0, 0.2, 5)) == "tie"
    )  # touching 0 is not excluding it
    assert verdict(Interval(0.5, None, None, 1)) == "tie"
    # the same differences seen from the other side give the mirrored word
    diffs = [0.011, 0.02, 0.014, 0.018]
    assert verdict(t_interval(diffs)) == "above"
    assert verdict(t_interval([-d for d in diffs])) == "below"
    noisy = [0.03, -0.02, 0.01, -0.015]
    assert verdict(t_interval(noisy)) == verdict(t_interval([-d for d in noisy]))


def test_counts():
    assert Counts.of([0.1, -0.2, 0.0, 0.3]) == Counts(higher=2, lower=1, equal=1)


def test_matches_the_paper_only_within_its_sd():
    assert paper_verdict(88.2, 88.38, 0.29) == "matches the paper (within its ± 0.29)"
    assert paper_verdict(87.62, 88.38, 0.29) == (
        "0.76 points below the paper (outside its ± 0.29)"
    )
    assert paper_verdict(42.03, 40.49, 0.07) == (
        "1.54 points above the paper (outside its ± 0.07)"
    )
    assert paper_verdict(99.33, 99.28, None) == (
        "0.05 points above the paper (paper gives no ±)"
    )


def test_worst_share_mean_takes_the_ceiling_of_a_tenth():
    from pflcore.records.results import worst_share_mean

    assert worst_share_mean([0.9, 0.1, 0.5]) == pytest.approx(0.1)  # 1 of 3
    fifteen = [i / 100 for i in range(15, 0, -1)]  # 0.15 ... 0.01
    assert worst_share_mean(fifteen) == pytest.approx((0.01 + 0.02) / 2)  # 2 of 15
    assert worst_share_mean([0.3] * 20, share=0.25) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        worst_share_mean([])
