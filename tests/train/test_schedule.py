"""Learning-rate schedules (ppkt.train.schedule) against their formulas, written out here, and as torch applies them."""
import math

import pytest
import torch

from ppkt.train.pretrain import exponential_schedule
from ppkt.train.schedule import exponential_factor, lambda_schedule, warmup_decay_factor


def test_warmup_then_poly_and_cosine_values():
    # total 100 iterations, 10 of warmup: (i + 1) / 10 during warmup, then t = (i - 10) / 90
    for i in range(10):
        assert warmup_decay_factor(i, 100, 10, "poly", 0.9) == pytest.approx((i + 1) / 10)
        assert warmup_decay_factor(i, 100, 10, "cosine") == pytest.approx((i + 1) / 10)
    assert warmup_decay_factor(10, 100, 10, "poly", 0.9) == 1.0
    assert warmup_decay_factor(55, 100, 10, "poly", 0.9) == pytest.approx(0.5 ** 0.9)
    assert warmup_decay_factor(55, 100, 10, "poly", 2.0) == pytest.approx(0.25)
    assert warmup_decay_factor(55, 100, 10, "cosine") == pytest.approx(0.5)  # (1 + cos(pi / 2)) / 2
    assert warmup_decay_factor(32.5, 100, 10, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    for schedule in ("poly", "cosine"):
        assert warmup_decay_factor(100, 100, 10, schedule) == pytest.approx(0.0)
        assert warmup_decay_factor(150, 100, 10, schedule) == pytest.approx(0.0)  # clamped past the end
    assert warmup_decay_factor(0, 100, 0, "poly", 0.9) == 1.0  # no warmup: the peak at once
    with pytest.raises(ValueError, match="step"):
        warmup_decay_factor(50, 100, 10, "step")


def test_teacher2d_schedule_is_the_poly_case_unchanged():
    """The 2D teacher's former schedule, written out: (i+1)/w in warmup, then (1 - (i-w)/max(1, n-w)) ** 0.9."""
    for iterations in (1, 7, 20, 800):
        warmup = max(1, round(0.05 * iterations))
        for i in range(iterations + 1):  # LambdaLR evaluates one past the last step too
            old = (i + 1) / warmup if i < warmup else (1.0 - (i - warmup) / max(1, iterations - warmup)) ** 0.9
            assert warmup_decay_factor(i, iterations, warmup, "poly", 0.9) == old


def test_exponential_factor():
    assert exponential_factor(0, 0.5, 10) == 1.0
    assert exponential_factor(10, 0.5, 10) == pytest.approx(0.5)
    assert exponential_factor(25, 0.5, 10) == pytest.approx(0.5 ** 2.5)


def _lrs_over(scheduler, optimizer, steps):
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_lambda_schedule_scales_every_group_by_the_factor():
    w = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.02}], lr=0.1)
    sched = lambda_schedule(opt, lambda i: warmup_decay_factor(i, 8, 2, "poly", 1.0))
    expected = [0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]  # warmup 2, then linear to 0 at iteration 8
    for got, f in zip(_lrs_over(sched, opt, 8), expected):
        assert got == pytest.approx([0.1 * f, 0.02 * f])


def test_pretraining_schedule_is_exponential():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.2)
    lrs = _lrs_over(exponential_schedule(opt, 0.9, 4), opt, 9)
    assert [g[0] for g in lrs] == pytest.approx([0.2 * 0.9 ** (i / 4) for i in range(9)])
