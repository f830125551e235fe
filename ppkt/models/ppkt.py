"""PPKT: a frozen 2D teacher teaches a 3D student through paired pixels and points (Algorithm 1)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ppkt.losses.ppnce import ppnce_loss
from ppkt.models.heads import UPL, Projection3D


class PPKT(nn.Module):
    """loss = PPNCE(g3D(f3D(points)), g2D(f2D(image)) at the paired pixels), on n_sub pairs of the batch."""

    def __init__(self, teacher: nn.Module, student: nn.Module, g2d: UPL, g3d: Projection3D, n_sub: int = 4096, temperature: float = 0.04):
        super().__init__()
        self.teacher, self.student, self.g2d, self.g3d = teacher, student, g2d, g3d
        self.n_sub, self.temperature = n_sub, temperature

    def forward(self, batch, generator: torch.Generator) -> Tensor:
        """batch: a `ppkt.data.pairs.PairBatch` (images (B, 3, H, W), feats / coords of its M voxels, and each voxel's
        image `voxel_batch` and flat `pixel`); `generator` draws the n_sub pairs. Returns the scalar PPNCE loss."""
        with torch.no_grad():
            f2d = self.teacher(batch.images)  # (B, C, h, w), frozen
        f3d = self.student(batch.feats, batch.coords, batch.batch_size)  # (M, C3)
        idx = self.sample_pairs(f3d.shape[0], generator).to(f3d.device)
        z3d = self.g3d(f3d[idx])
        z2d = self.g2d.at_pixels(f2d, batch.images.shape[-2:], batch.voxel_batch[idx], batch.pixel[idx])
        return ppnce_loss(z3d, z2d.to(z3d.dtype), self.temperature)

    def sample_pairs(self, num_voxels: int, generator: torch.Generator) -> Tensor:
        """n_sub distinct voxels of the whole batch (all of them if fewer)."""
        return torch.randperm(num_voxels, generator=generator)[: self.n_sub]
