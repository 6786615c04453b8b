"""The statistics every published table uses, and the words they allow.

* :func:`mean_sd`: mean and **sample** standard deviation (ddof = 1).
* :func:`t_interval`: a Student-t 95 % interval for the mean of paired
  differences (n - 1 degrees of freedom).
* :func:`verdict`: "above" / "below" only where the interval excludes 0,
  "tie" otherwise, the same rule in both directions.
* :func:`paper_verdict`: "matches the paper" only within the paper's ±.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

LEVEL = 0.95


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1; None for one value).

    Raises
    ------
    ValueError
        If ``values`` is empty.
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided Student-t interval.

    Attributes
    ----------
    mean : float
        The mean of the values.
    low, high : float or None
        The interval's ends; None with fewer than two values.
    n : int
        How many values.
    """

    mean: float
    low: float | None
    high: float | None
    n: int


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided Student-t quantile: P(|T| <= q) = ``level`` with ``df`` df."""
    return float(student_t.ppf(0.5 + level / 2, df))


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``values`` with its Student-t interval (n - 1 df).

    mean ± t_{(1 + level) / 2, n - 1} · s / sqrt(n), with s the sample std.
    """
    mean, sd = mean_sd(values)
    n = len(values)
    if sd is None:
        return Interval(mean, None, None, n)
    half = t_quantile(n - 1, level) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def verdict(interval: Interval) -> str:
    """``above`` / ``below`` where the interval excludes 0, else ``tie``.

    Without an interval (one value) nothing is excluded: ``tie``.
    """
    if interval.low is None or interval.high is None:
        return "tie"
    if interval.low > 0:
        return "above"
    if interval.high < 0:
        return "below"
    return "tie"


@dataclass(frozen=True)
class Counts:
    """How many paired values are higher, lower and equal."""

    higher: int
    lower: int
    equal: int

    @classmethod
    def of(cls, differences: Sequence[float]) -> Counts:
        """Count positive, negative and zero differences."""
        return cls(
            higher=sum(d > 0 for d in differences),
            lower=sum(d < 0 for d in differences),
            equal=sum(d == 0 for d in differences),
        )


def paper_verdict(ours: float, paper: float, paper_sd: float | None) -> str:
    """How our mean stands beside a paper's number, in points.

    ``matches the paper`` only when ``|ours - paper| <= paper_sd``; otherwise
    how far above or below. Where the paper gives no ±, nothing can match:
    the distance is given with "paper gives no ±".
    """
    gap = ours - paper
    side = "above" if gap > 0 else "below"
    if paper_sd is None:
        return f"{abs(gap):.2f} points {side} the paper (paper gives no ±)"
    if abs(gap) <= paper_sd:
        return f"matches the paper (within its ± {paper_sd:g})"
    return f"{abs(gap):.2f} points {side} the paper (outside its ± {paper_sd:g})"
