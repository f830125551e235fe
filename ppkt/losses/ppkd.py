"""Pixel-to-point knowledge distillation (PPKD, the paper's Table 5 baseline): each sampled point learns the class
distribution that a 2D segmentation teacher predicts at its paired pixel.

    L = (T^2 / n) sum_i KL( softmax(t_i / T) || softmax(s_i / T) )

t_i (C,): the teacher's class logits at pixel i; s_i (C,): the student's linear class head at the paired point.
"""
from __future__ import annotations

from torch import Tensor

from ppkt.losses.kd import kd_loss


def ppkd_loss(point_logits: Tensor, pixel_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """point_logits (n, C) from the student's class head, pixel_logits (n, C) from the 2D teacher -> scalar."""
    return kd_loss(point_logits, pixel_logits, temperature)
