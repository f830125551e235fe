"""Paired differences with a Student-t confidence interval, and the verdict it allows.

Design: every pretrained run has a scratch twin with the same labelled selection, seed and data order, so the
selection's effect (which decides few-label cells) cancels in the difference d_i = pretrained_i - scratch_i.
Over n pairs: mean d, sample standard deviation s (n - 1 in the denominator), and the two-sided interval
mean +- t_{1 - alpha/2, n - 1} * s / sqrt(n). Why this interval: the pairs are independent draws (one label
selection and seed each) and a difference of two mIoUs is close to normal; with few pairs the t quantile (not 1.96)
keeps the coverage honest. Units are those of the inputs (mIoU points in the reports).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float  # mean paired difference
    half_width: float  # t_{1-alpha/2, n-1} * sd / sqrt(n); inf with fewer than 2 pairs
    n: int  # pairs
    sd: float  # sample standard deviation of the differences (nan with fewer than 2 pairs)
    confidence: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def paired_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """The t-interval of mean(a_i - b_i) over the pairs (a_i, b_i)."""
    if len(a) != len(b):
        raise ValueError(f"paired_interval: {len(a)} values against {len(b)}: every run needs its twin")
    if not len(a):
        raise ValueError("paired_interval: no pairs")
    if not 0 < confidence < 1:
        raise ValueError(f"paired_interval: confidence must be in (0, 1), got {confidence}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n, mean = len(d), math.fsum(d) / len(d)
    if n < 2:
        return Interval(mean, math.inf, n, math.nan, confidence)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1))
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    return Interval(mean, t * sd / math.sqrt(n), n, sd, confidence)


def verdict(interval: Interval) -> str:
    """'helps' if the whole interval is above 0, 'hurts' if below, else 'no effect larger than +-half-width'."""
    if interval.low > 0:
        return "helps"
    if interval.high < 0:
        return "hurts"
    return f"no effect larger than ±{interval.half_width:.1f}"
