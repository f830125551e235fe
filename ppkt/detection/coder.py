"""VoteNet's box parameterisation: a heading as (bin, residual) and a size as (class, residual from the class's mean).

Heading bins: NH bins of width w = 2 pi / NH centred at 0, w, 2w, ...; angle a (radians) -> bin
floor(((a mod 2 pi) + w / 2) mod 2 pi / w), residual = the angle minus the bin's centre, in [-w/2, w/2).
Sizes: one cluster per class whose centre is the mean full size (dx, dy, dz) of the class's training boxes; the
residual is size - mean, predicted divided by the mean.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch
from torch import Tensor


def angle_to_bin(angle: Tensor, num_bins: int) -> Tuple[Tensor, Tensor]:
    """(bin (...) int64, residual (...) radians) of angles (...) radians."""
    width = 2 * math.pi / num_bins
    shifted = torch.remainder(torch.remainder(angle, 2 * math.pi) + width / 2, 2 * math.pi)
    cls = torch.clamp((shifted / width).floor().long(), max=num_bins - 1)
    return cls, shifted - (cls.to(angle.dtype) * width + width / 2)


def bin_to_angle(cls: Tensor, residual: Tensor, num_bins: int) -> Tensor:
    """Angle in radians (in (-pi, pi] when NH > 1 and the residual is in range) of a bin and its residual."""
    angle = cls.to(residual.dtype) * (2 * math.pi / num_bins) + residual
    return torch.where(angle > math.pi, angle - 2 * math.pi, angle)


def mean_sizes(boxes: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """(C, 3) mean full size of each class over (K, 8) box arrays; a class without boxes gets the mean of all
    boxes (or 1 m if there is none)."""
    rows = [b for b in boxes if len(b)]
    every = np.concatenate(rows) if rows else np.zeros((0, 8))
    fallback = every[:, 3:6].mean(0) if len(every) else np.ones(3)
    out = np.tile(fallback, (num_classes, 1))
    for c in range(num_classes):
        of_c = every[np.round(every[:, 7]).astype(int) == c]
        if len(of_c):
            out[c] = of_c[:, 3:6].mean(0)
    return out.astype(np.float32)
