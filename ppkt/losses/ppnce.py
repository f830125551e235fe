"""Point-pixel NCE loss (PPNCE, eq. 3 of the paper)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ppnce_loss(z3d: Tensor, z2d: Tensor, temperature: float = 0.04) -> Tensor:
    """InfoNCE over matched pairs: row i of z3d (n, E) is the positive of row i of z2d (n, E).

    Both are L2-normalised embeddings of n sampled pixel-point pairs; every other pixel of the sample is a
    negative for point i:

        L = -(1/n) sum_i log( exp(z3d_i . z2d_i / tau) / sum_j exp(z3d_i . z2d_j / tau) )

    The logits are computed in float32 (float64 for float64 inputs) with autocast off: a logit near 1 / tau = 25
    would be rounded by up to 0.06 in bfloat16 (0.008 in float16). Returns the scalar float32 (float64) loss.
    """
    if z3d.shape != z2d.shape or z3d.ndim != 2:
        raise ValueError(f"ppnce_loss: z3d {tuple(z3d.shape)} and z2d {tuple(z2d.shape)} must both be (n, E)")
    return infonce(z3d, z2d, torch.arange(z3d.shape[0], device=z3d.device), temperature).mean()


def infonce(z3d: Tensor, z2d: Tensor, positive: Tensor, temperature: float) -> Tensor:
    """Per-point terms -log softmax_j(z3d_i . z2d_j / tau)[positive_i]: z3d (n, E), z2d (N, E), positive (n,) -> (n,)."""
    dtype = torch.promote_types(torch.promote_types(z3d.dtype, z2d.dtype), torch.float32)
    with torch.autocast(device_type=z3d.device.type, enabled=False):
        logits = z3d.to(dtype) @ z2d.to(dtype).T / temperature
        return F.cross_entropy(logits, positive, reduction="none")
