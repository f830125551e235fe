"""Paired differences with a Student-t confidence interval, the verdict it allows, and how many pairs to run.

Design: every pretrained run has a scratch twin with the same labelled selection, seed and data order, so the
selection's effect (which decides few-label cells) cancels in the difference d_i = pretrained_i - scratch_i.
Over n pairs: mean d, sample standard deviation s (n - 1 in the denominator), and the two-sided interval
mean +- t_{1 - alpha/2, n - 1} * s / sqrt(n). Why this interval: the pairs are independent draws (one label
selection and seed each) and a difference of two mIoUs is close to normal; with few pairs the t quantile (not 1.96)
keeps the coverage honest. Units are those of the inputs (mIoU points in the reports).

Pretraining variance (`clustered_interval`): pairs that share a pretraining run are not independent draws of
"a PPKT backbone". The interval is then taken over the K pretraining runs' mean differences (K - 1 degrees of
freedom), so the spread between pretraining runs is inside it; with one pair per pretraining run it is the
paired interval above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from scipy import stats

MARGIN = 2.0  # mIoU / mAP points: the smallest difference the benchmarks care about ("no effect larger than ±2")


@dataclass(frozen=True)
class Interval:
    mean: float  # mean paired difference
    half_width: float  # t_{1-alpha/2, n-1} * sd / sqrt(n); inf with fewer than 2 pairs
    n: int  # pairs (for a clustered interval: pretraining runs)
    sd: float  # sample standard deviation of the differences (nan with fewer than 2 pairs)
    confidence: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def t_interval(d: Sequence[float], confidence: float = 0.95) -> Interval:
    """The t-interval of the mean of independent values d."""
    if not len(d):
        raise ValueError("t_interval: no values")
    if not 0 < confidence < 1:
        raise ValueError(f"t_interval: confidence must be in (0, 1), got {confidence}")
    d = [float(x) for x in d]
    n, mean = len(d), math.fsum(d) / len(d)
    if n < 2:
        return Interval(mean, math.inf, n, math.nan, confidence)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1))
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    return Interval(mean, t * sd / math.sqrt(n), n, sd, confidence)


def paired_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """The t-interval of mean(a_i - b_i) over the pairs (a_i, b_i)."""
    if len(a) != len(b):
        raise ValueError(f"paired_interval: {len(a)} values against {len(b)}: every run needs its twin")
    if not len(a):
        raise ValueError("paired_interval: no pairs")
    return t_interval([float(x) - float(y) for x, y in zip(a, b)], confidence)


def clustered_interval(diffs: Mapping[object, Sequence[float]], confidence: float = 0.95) -> Interval:
    """The interval of the mean difference when the pairs come in clusters (pretraining run -> its pairs' differences):
    the t-interval over the K cluster means (K - 1 degrees of freedom). It covers the between-cluster variance --
    another pretraining run would give another mean -- as well as the within-cluster (fine-tuning seed) variance;
    with equal cluster sizes it is the exact interval of the balanced one-way random-effects model."""
    means = [math.fsum(map(float, v)) / len(v) for v in diffs.values() if len(v)]
    if not means:
        raise ValueError("clustered_interval: no pairs")
    return t_interval(means, confidence)


def variance_components(groups: Mapping[object, Sequence[float]]) -> dict:
    """One-way ANOVA estimates for values grouped by pretraining run (equal group sizes m >= 2):
    within = mean within-group variance, between = max(0, var(group means) - within / m); sds in the values' units."""
    sizes = {len(v) for v in groups.values()}
    if len(groups) < 2 or len(sizes) != 1 or min(sizes) < 2:
        raise ValueError("variance_components: need >= 2 groups of the same size >= 2")
    m = sizes.pop()
    means = [math.fsum(v) / m for v in groups.values()]
    within = math.fsum(math.fsum((x - mu) ** 2 for x in v) / (m - 1) for v, mu in zip(groups.values(), means)) / len(means)
    grand = math.fsum(means) / len(means)
    var_means = math.fsum((mu - grand) ** 2 for mu in means) / (len(means) - 1)
    return {"within_sd": math.sqrt(within), "between_sd": math.sqrt(max(0.0, var_means - within / m)), "m": m,
            "groups": len(means)}


def verdict(interval: Interval, margin: float) -> str:
    """'helps' / 'hurts' when the interval excludes 0; 'no effect larger than ±margin' only when the whole interval
    lies inside [-margin, margin] (margin declared in advance, e.g. by the protocol); otherwise 'inconclusive'."""
    if not margin > 0:
        raise ValueError(f"verdict: the margin must be > 0, got {margin}")
    if interval.low > 0:
        return "helps"
    if interval.high < 0:
        return "hurts"
    if -margin <= interval.low and interval.high <= margin:
        return f"no effect larger than ±{margin:g}"
    return "inconclusive"


def stein_pairs(pilot_sd: float, pilot_n: int, half_width: float, confidence: float = 0.95, minimum: int = 2) -> int:
    """Stein's two-stage rule: pairs needed for a `confidence` interval no wider than ±half_width, from a pilot of
    pilot_n pairs whose differences had standard deviation pilot_sd: ceil((t_{1-a/2, pilot_n - 1} * sd / h)^2), at
    least `minimum`. The number is fixed before the confirmatory pairs are run (no seeds added after a look)."""
    if pilot_n < 2 or not half_width > 0 or not pilot_sd >= 0:
        raise ValueError(f"stein_pairs: need pilot_n >= 2, half_width > 0, sd >= 0 (got {pilot_n}, {half_width}, {pilot_sd})")
    t = float(stats.t.ppf(0.5 + confidence / 2, pilot_n - 1))
    return max(minimum, math.ceil((t * pilot_sd / half_width) ** 2))
