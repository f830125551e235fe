"""The paired t-interval and its verdict against values worked out by hand (t quantiles from a printed table)."""
import math

import pytest

from ppkt.benchmark.stats import paired_interval, verdict


def test_three_pairs_hand_computed():
    # d = (1, 2, 3): mean 2, sd 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    iv = paired_interval([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert iv.mean == pytest.approx(2.0)
    assert iv.sd == pytest.approx(1.0)
    assert iv.half_width == pytest.approx(2.484138, abs=1e-6)
    assert (iv.low, iv.high) == pytest.approx((2.0 - 2.484138, 2.0 + 2.484138), abs=1e-6)
    assert verdict(iv, 2.0) == "inconclusive"  # [-0.48, +4.48] crosses +2: allows a gain of 4.5


def test_five_pairs_helps_and_hurts():
    # d = (2, 3, 4, 3, 3): mean 3, sd sqrt(0.5) = 0.707107, t_{0.975, 4} = 2.776445 -> half-width 0.877983
    a, b = [52.0, 43.0, 34.0, 33.0, 23.0], [50.0, 40.0, 30.0, 30.0, 20.0]
    iv = paired_interval(a, b)
    assert iv.half_width == pytest.approx(2.776445 * math.sqrt(0.5) / math.sqrt(5), abs=1e-6)
    assert verdict(iv, 2.0) == "helps"
    assert verdict(paired_interval(b, a), 2.0) == "hurts"


def test_ninety_percent_and_ten_pairs():
    # d = 0, 1, ..., 9: mean 4.5, sd 3.027650; t_{0.95, 9} = 1.833113 -> half-width 1.754993
    iv = paired_interval([float(i) for i in range(10)], [0.0] * 10, confidence=0.90)
    assert iv.half_width == pytest.approx(1.833113 * 3.027650 / math.sqrt(10), abs=1e-5)


def test_one_pair_has_no_interval_and_mismatch_is_refused():
    iv = paired_interval([5.0], [1.0])
    assert iv.mean == 4.0 and math.isinf(iv.half_width)
    assert verdict(iv, 2.0) == "inconclusive"
    with pytest.raises(ValueError, match="twin"):
        paired_interval([1.0, 2.0], [1.0])


def test_verdict_rule_on_hand_made_intervals():
    from ppkt.benchmark.stats import Interval

    def iv(low, high):
        return Interval((low + high) / 2, (high - low) / 2, 5, 1.0, 0.95)

    assert verdict(iv(-1.5, 1.8), 2.0) == "no effect larger than ±2"  # inside ±2
    assert verdict(iv(-2.0, 2.0), 2.0) == "no effect larger than ±2"  # the margin itself is inside
    assert verdict(iv(-0.1, 3.9), 2.0) == "inconclusive"  # crosses +2: allows +3.9
    assert verdict(iv(-2.5, 0.5), 2.0) == "inconclusive"  # crosses -2
    assert verdict(iv(-5.0, 5.0), 2.0) == "inconclusive"
    assert verdict(iv(0.2, 3.0), 2.0) == "helps"  # excludes 0
    assert verdict(iv(-3.0, -0.1), 2.0) == "hurts"
    assert verdict(iv(0.1, 0.9), 2.0) == "helps"  # excludes 0 even though inside the margin
    with pytest.raises(ValueError, match="margin"):
        verdict(iv(-1.0, 1.0), 0.0)


def test_clustered_interval_hand_computed():
    from ppkt.benchmark.stats import clustered_interval, variance_components

    # 3 pretraining runs x 2 fine-tuning seeds; cluster means 2, 4, 6 -> mean 4, sd 2, t_{0.975, 2} = 4.302653
    # -> half-width 4.302653 * 2 / sqrt(3) = 4.968276 (the 6 pairs taken as independent would give
    # t_{0.975, 5} = 2.570582 * sd(1, 3, 3, 5, 5, 7) = sqrt(22 / 5) = 2.097618, / sqrt(6) -> 2.2013, too narrow)
    diffs = {0: [1.0, 3.0], 1: [3.0, 5.0], 2: [5.0, 7.0]}
    iv = clustered_interval(diffs)
    assert iv.mean == pytest.approx(4.0) and iv.n == 3 and iv.sd == pytest.approx(2.0)
    assert iv.half_width == pytest.approx(4.302653 * 2 / math.sqrt(3), abs=1e-5)
    assert paired_interval([1, 3, 3, 5, 5, 7], [0] * 6).half_width == pytest.approx(2.570582 * math.sqrt(22 / 5) / math.sqrt(6), abs=1e-5)
    # one pair per pretraining run: the ordinary paired interval
    assert clustered_interval({0: [1.0], 1: [2.0], 2: [3.0]}).half_width == pytest.approx(2.484138, abs=1e-6)
    # variance components: within = mean of the within variances (2, 2, 2) = 2; var of means 4 -> between 4 - 2/2 = 3
    vc = variance_components(diffs)
    assert vc["within_sd"] == pytest.approx(math.sqrt(2.0)) and vc["between_sd"] == pytest.approx(math.sqrt(3.0))


def test_stein_pairs_hand_computed():
    from ppkt.benchmark.stats import stein_pairs

    # pilot of 4 pairs, sd 2.5, target ±2: (t_{0.975, 3} = 3.182446 * 2.5 / 2)^2 = 15.82 -> 16
    assert stein_pairs(2.5, 4, 2.0) == 16
    assert stein_pairs(0.1, 4, 2.0) == 2  # at least the minimum
    with pytest.raises(ValueError):
        stein_pairs(1.0, 1, 2.0)
