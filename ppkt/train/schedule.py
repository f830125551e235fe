"""Learning-rate schedules: multipliers of the peak lr per iteration, and the torch LambdaLR that applies one.

i is the 0-based iteration (the number of optimizer steps taken), the factor multiplies each group's lr.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["warmup_decay_factor", "exponential_factor", "lambda_schedule"]


def warmup_decay_factor(i: int, total: int, warmup: int, schedule: str = "poly", power: float = 0.9) -> float:
    """Linear warmup over `warmup` iterations, then poly or cosine decay to 0 at iteration `total`.

        i < warmup:  (i + 1) / warmup
        else, with t = clamp((i - warmup) / max(total - warmup, 1), 0, 1):
            poly:    (1 - t) ** power
            cosine:  (1 + cos(pi t)) / 2
    """
    if i < warmup:
        return (i + 1) / warmup
    t = min(max((i - warmup) / max(total - warmup, 1), 0.0), 1.0)
    if schedule == "poly":
        return (1.0 - t) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"schedule must be 'poly' or 'cosine', got {schedule!r}")


def exponential_factor(i: int, gamma: float, step: float) -> float:
    """gamma ** (i / step): the lr shrinks by `gamma` every `step` iterations (smoothly, not in stairs)."""
    return gamma ** (i / step)


def lambda_schedule(optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR giving each parameter group lr = its initial lr * factor(i) after i scheduler steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
