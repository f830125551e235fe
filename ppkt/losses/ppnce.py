"""Point-pixel NCE loss (PPNCE, eq. 3 of the paper)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ppnce_loss(z3d: Tensor, z2d: Tensor, temperature: float = 0.04) -> Tensor:
    """InfoNCE over matched pairs: row i of z3d (n, E) is the positive of row i of z2d (n, E).

    Both are L2-normalised embeddings of n sampled pixel-point pairs. logits = z3d @ z2d.T / tau;
    every other pixel of the sample is a negative for point i. Returns the mean over the n points.
    """
    if z3d.shape != z2d.shape or z3d.ndim != 2:
        raise ValueError(f"ppnce_loss: z3d {tuple(z3d.shape)} and z2d {tuple(z2d.shape)} must both be (n, E)")
    logits = z3d @ z2d.T / temperature
    labels = torch.arange(z3d.shape[0], device=z3d.device)
    return F.cross_entropy(logits.float(), labels)
