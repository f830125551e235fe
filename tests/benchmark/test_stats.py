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
    assert verdict(iv) == "no effect larger than ±2.5"


def test_five_pairs_helps_and_hurts():
    # d = (2, 3, 4, 3, 3): mean 3, sd sqrt(0.5) = 0.707107, t_{0.975, 4} = 2.776445 -> half-width 0.877983
    a, b = [52.0, 43.0, 34.0, 33.0, 23.0], [50.0, 40.0, 30.0, 30.0, 20.0]
    iv = paired_interval(a, b)
    assert iv.half_width == pytest.approx(2.776445 * math.sqrt(0.5) / math.sqrt(5), abs=1e-6)
    assert verdict(iv) == "helps"
    assert verdict(paired_interval(b, a)) == "hurts"


def test_ninety_percent_and_ten_pairs():
    # d = 0, 1, ..., 9: mean 4.5, sd 3.027650; t_{0.95, 9} = 1.833113 -> half-width 1.754993
    iv = paired_interval([float(i) for i in range(10)], [0.0] * 10, confidence=0.90)
    assert iv.half_width == pytest.approx(1.833113 * 3.027650 / math.sqrt(10), abs=1e-5)


def test_one_pair_has_no_interval_and_mismatch_is_refused():
    iv = paired_interval([5.0], [1.0])
    assert iv.mean == 4.0 and math.isinf(iv.half_width)
    assert verdict(iv).startswith("no effect")
    with pytest.raises(ValueError, match="twin"):
        paired_interval([1.0, 2.0], [1.0])
