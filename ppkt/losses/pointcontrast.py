"""PointInfoNCE (PointContrast, Xie et al., 2020; the paper's pure-3D baseline): two overlapping frames of one scan,
each augmented on its own; matched points (nearest neighbours in world coordinates) are positives, the other
sampled matches negatives. No 2D network.

    L = -(1 / n) sum_i log( exp(a_i . b_i / tau) / sum_j exp(a_i . b_j / tau) )

a_i, b_i (E,): the L2-normalised features of the two points of match i in view A and view B; n = 4096 sampled matches,
tau = 0.07 by default.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ppkt.losses.ppnce import infonce


def sample_matches(count: int, n_sub: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Indices of min(count, n_sub) of `count` matches, drawn without replacement -> (k,) int64."""
    return torch.randperm(count, generator=generator)[:n_sub]


def pointinfonce_loss(feats_a: Tensor, feats_b: Tensor, temperature: float = 0.07) -> Tensor:
    """feats_a, feats_b (n, E) L2-normalised, row i of each the two points of match i -> scalar."""
    if feats_a.shape != feats_b.shape or feats_a.ndim != 2:
        raise ValueError(f"pointinfonce_loss: {tuple(feats_a.shape)} and {tuple(feats_b.shape)} must both be (n, E)")
    return infonce(feats_a, feats_b, torch.arange(feats_a.shape[0], device=feats_a.device), temperature).mean()
