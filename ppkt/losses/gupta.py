"""Cross-modal distillation (Gupta et al., 2016; the paper's Table 1 baseline): the student's pooled encoder feature,
through a learned linear map, regresses the teacher's pooled 2D feature.

    L = (1 / B) sum_b (1 / C2) || A g3d_b + c - g2d_b ||^2

g3d_b (C3,): the mean encoder feature of sample b's voxels; g2d_b (C2,): the mean of the teacher's feature map of
frame b; A (C2, C3), c (C2,) learned (GuptaMap). The teacher side is detached. The squared distance is averaged over
the teacher's C2 channels, so the loss's scale does not grow with the teacher's width: summed over EfficientNet-Lite0's
320 channels it starts near 600 and diverged within 5 iterations at the pretraining lr (0.1) of the ablation run.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class GuptaMap(nn.Linear):
    """The learned linear map from the 3D encoder's channels to the teacher's."""


def gupta_loss(mapped3d: Tensor, pooled2d: Tensor) -> Tensor:
    """mapped3d (B, C2) = GuptaMap(g3d), pooled2d (B, C2) -> scalar: the squared L2 distance / C2, mean over samples."""
    if mapped3d.shape != pooled2d.shape or mapped3d.ndim != 2:
        raise ValueError(f"gupta_loss: {tuple(mapped3d.shape)} and {tuple(pooled2d.shape)} must both be (B, C)")
    dtype = torch.promote_types(mapped3d.dtype, torch.float32)
    return ((mapped3d.to(dtype) - pooled2d.detach().to(dtype)) ** 2).mean(dim=1).mean()
