"""PointContrast: the student alone learns from two views of a scan (`loss.name=pointcontrast`; no 2D network)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ppkt.losses.pointcontrast import pointinfonce_loss, sample_matches
from ppkt.models.heads import Projection3D


class PointContrast(nn.Module):
    """loss = PointInfoNCE(g3D(f3D(view a))[matches], g3D(f3D(view b))[matches]) on n_sub sampled matches."""

    def __init__(self, student: nn.Module, g3d: Projection3D, n_sub: int = 4096, temperature: float = 0.07):
        super().__init__()
        self.student, self.g3d = student, g3d
        self.n_sub, self.temperature = n_sub, temperature

    def forward(self, batch, generator: torch.Generator) -> Tensor:
        """batch: a `ppkt.data.views.ViewBatch` (both views of every pair, and the matched voxel rows)."""
        f3d = self.student(batch.feats, batch.coords, batch.views)  # (M, C3)
        pick = sample_matches(batch.match_a.shape[0], self.n_sub, generator).to(f3d.device)
        a, b = batch.match_a[pick], batch.match_b[pick]
        with torch.autocast(device_type=f3d.device.type, enabled=False):  # embeddings in float32 (64), also under amp
            z = self.g3d(f3d[torch.cat([a, b])].to(torch.promote_types(f3d.dtype, torch.float32)))
        return pointinfonce_loss(z[: a.shape[0]], z[a.shape[0]:], self.temperature)
