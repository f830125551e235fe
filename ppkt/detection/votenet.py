"""VoteNet (Qi et al. 2019) on the SR-UNet backbone, as PointContrast and PPKT fine-tune it for 3D detection.

backbone (SR-UNet, per-voxel features at stride 1) -> seeds: farthest-point sampling of `num_seeds` voxels per
scene (their mean point positions, metres), features projected to `width` -> voting: each seed predicts an offset
to its object's centre and a feature residual (vote = seed + offset, features L2-normalised) -> aggregation:
farthest-point sampling of `num_proposals` votes, each grouping the votes within `radius` (at most `nsample`,
positions relative to the centre / radius), a shared MLP and max pooling -> proposal head: per proposal
objectness (2), centre offset (3), heading bin scores and residuals (2 NH), size class scores and residuals
(4 NS; NS = C clusters at the classes' mean sizes) and class scores (C).
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.detection.pointops import ball_query, farthest_point_sample
from ppkt.models.sparse_unet import build_sparse_unet


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear + BatchNorm1d + ReLU per step, on (rows, widths[0]) -> (rows, widths[-1])."""
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VoteNet(nn.Module):
    def __init__(self, arch: str, num_classes: int, mean_size: Tensor, channels: Sequence[int] | None = None,
                 in_channels: int = 3, num_heading_bins: int = 12, num_seeds: int = 1024, num_proposals: int = 256,
                 radius: float = 0.3, nsample: int = 16, width: int = 256):
        super().__init__()
        self.arch, self.num_classes, self.num_heading_bins = arch, int(num_classes), int(num_heading_bins)
        self.num_seeds, self.num_proposals, self.radius, self.nsample = num_seeds, num_proposals, float(radius), nsample
        mean_size = torch.as_tensor(mean_size, dtype=torch.float32)
        if mean_size.shape != (num_classes, 3):
            raise ValueError(f"mean_size must be (num_classes, 3) = ({num_classes}, 3), got {tuple(mean_size.shape)}")
        self.register_buffer("mean_size", mean_size)
        self.backbone = build_sparse_unet(arch, in_channels, channels)
        self.seed_proj = mlp([self.backbone.out_channels, width])
        self.vote = nn.Sequential(mlp([width, width, width]), nn.Linear(width, 3 + width))
        self.aggregate = mlp([3 + width, 128, 128, 128])
        nh, c = self.num_heading_bins, self.num_classes
        self.proposal = nn.Sequential(mlp([128, 128, 128]), nn.Linear(128, 2 + 3 + 2 * nh + 4 * c + c))

    def forward(self, feats: Tensor, coords: Tensor, xyz: Tensor, offsets: Tensor) -> Dict[str, Tensor]:
        """feats (M, in), coords (M, 4) [b, x, y, z], xyz (M, 3) metres, offsets (B + 1,) -> the proposals of every
        scene, each (B, P, ...): see `decode`; plus seed_xyz, vote_xyz (B, S, 3) and aggregated_xyz (B, P, 3)."""
        b = offsets.numel() - 1
        voxel_feats = self.backbone(feats, coords, b)
        counts = (offsets[1:] - offsets[:-1]).tolist()
        # each scene's voxel rows, padded to the largest scene with its first row (never chosen before the others)
        pad = torch.stack([torch.cat([torch.arange(int(o), int(o) + c, device=xyz.device),
                                      torch.full((max(counts) - c,), int(o), device=xyz.device)])
                           for o, c in zip(offsets[:-1].tolist(), counts)])  # (B, N_max)
        rows = pad.gather(1, farthest_point_sample(xyz[pad].detach(), self.num_seeds))  # (B, S) rows of the batch
        seed_xyz = xyz[rows]
        seed_feats = self.seed_proj(voxel_feats[rows.flatten()])  # (B S, W)
        out = self.vote(seed_feats)
        vote_xyz = seed_xyz + out[:, :3].view(b, -1, 3)
        vote_feats = F.normalize(seed_feats + out[:, 3:], dim=1).view(b, self.num_seeds, -1)
        picks = farthest_point_sample(vote_xyz.detach(), self.num_proposals)  # (B, P)
        centres = vote_xyz.gather(1, picks[..., None].expand(-1, -1, 3))  # (B, P, 3)
        grouped = []
        for i in range(b):
            near = ball_query(vote_xyz[i].detach(), centres[i].detach(), self.radius, self.nsample)  # (P, ns)
            rel = (vote_xyz[i][near] - centres[i][:, None]) / self.radius
            grouped.append(torch.cat([rel, vote_feats[i][near]], dim=2))
        g = torch.stack(grouped)  # (B, P, ns, 3 + W)
        pooled = self.aggregate(g.flatten(0, 2)).view(b * self.num_proposals, self.nsample, -1).max(dim=1).values
        raw = self.proposal(pooled).view(b, self.num_proposals, -1)
        return {**self.decode(raw, centres), "seed_xyz": seed_xyz, "vote_xyz": vote_xyz}

    def decode(self, raw: Tensor, aggregated_xyz: Tensor) -> Dict[str, Tensor]:
        """Split the head's (B, P, 5 + 2 NH + 5 C) output: objectness (B, P, 2), center (B, P, 3) metres,
        heading_scores / heading_residuals (B, P, NH) radians, size_scores (B, P, C), size_residuals (B, P, C, 3)
        metres, sem_scores (B, P, C), and the normalised residuals the losses compare."""
        nh, c = self.num_heading_bins, self.num_classes
        parts = torch.split(raw, [2, 3, nh, nh, c, 3 * c, c], dim=2)
        size_norm = parts[5].reshape(*raw.shape[:2], c, 3)
        return {"objectness": parts[0], "center": aggregated_xyz + parts[1], "aggregated_xyz": aggregated_xyz,
                "heading_scores": parts[2], "heading_residuals_norm": parts[3],
                "heading_residuals": parts[3] * (math.pi / nh), "size_scores": parts[4],
                "size_residuals_norm": size_norm, "size_residuals": size_norm * self.mean_size, "sem_scores": parts[6]}
