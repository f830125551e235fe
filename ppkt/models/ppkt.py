"""PPKT: a frozen 2D teacher teaches a 3D student through paired pixels and points (Algorithm 1)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ppkt.losses.gathered import gathered_ppnce_loss
from ppkt.losses.ppnce import ppnce_loss
from ppkt.models.heads import UPL, Projection3D


@torch.no_grad()
def teacher_features(teacher: nn.Module, batch) -> Tensor:
    """(B, C, h, w) frozen teacher features: the batch's cached ones (float16) when present, else computed."""
    cached = getattr(batch, "teacher_features", None)
    return teacher(batch.images) if cached is None else cached


class PPKT(nn.Module):
    """loss = PPNCE(g3D(f3D(points)), g2D(f2D(image)) at the paired pixels), on n_sub pairs of the batch.

    gather_negatives: in a multi-process run, each process's points are contrasted with the sampled pixels of every
    process (`ppkt.losses.gathered`); otherwise (default, as SLidR) with its own only.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, g2d: UPL, g3d: Projection3D, n_sub: int = 4096,
                 temperature: float = 0.04, gather_negatives: bool = False):
        super().__init__()
        self.teacher, self.student, self.g2d, self.g3d = teacher, student, g2d, g3d
        self.n_sub, self.temperature, self.gather_negatives = n_sub, temperature, gather_negatives

    def forward(self, batch, generator: torch.Generator) -> Tensor:
        """batch: a `ppkt.data.pairs.PairBatch` (images (B, 3, H, W), feats / coords of its M voxels, and each voxel's
        image `voxel_batch` and flat `pixel`); `generator` draws the n_sub pairs. Returns the scalar PPNCE loss."""
        f2d = self.teacher_features(batch)
        f3d = self.student(batch.feats, batch.coords, batch.batch_size)  # (M, C3)
        return self.pair_loss(f2d, f3d, batch, generator)

    def teacher_features(self, batch) -> Tensor:
        return teacher_features(self.teacher, batch)

    def pair_loss(self, f2d: Tensor, f3d: Tensor, batch, generator: torch.Generator) -> Tensor:
        """PPNCE of n_sub sampled voxels' g3D embeddings against g2D at their pixels (f3d: (M, C3) student features)."""
        idx = self.sample_pairs(f3d.shape[0], generator).to(f3d.device)
        with torch.autocast(device_type=f3d.device.type, enabled=False):  # embeddings in float32 (64), also under amp
            z3d = self.g3d(f3d[idx].to(torch.promote_types(f3d.dtype, torch.float32)))  # (n, E)
        z2d = self.g2d.at_pixels(f2d, batch.images.shape[-2:], batch.voxel_batch[idx], batch.pixel[idx])  # (n, E) float32
        loss = gathered_ppnce_loss if self.gather_negatives else ppnce_loss
        return loss(z3d, z2d.to(z3d.dtype), self.temperature)

    def sample_pairs(self, num_voxels: int, generator: torch.Generator) -> Tensor:
        """n_sub distinct voxels of the whole batch (all of them if fewer)."""
        return torch.randperm(num_voxels, generator=generator)[: self.n_sub]
