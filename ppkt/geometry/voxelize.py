"""Voxelisation that keeps the pixel-point pairing.

Every back-projected point carries the index of the pixel it came from. Voxelising merges points into
voxels; `Voxelization.point_to_voxel` keeps, for every point (and therefore every pixel), the voxel it
landed in, so a pixel's 2D feature can always be paired with the 3D feature of its own voxel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Voxelization:
    coords: Tensor  # (M, 3) int32 voxel indices, non-negative (shifted so the minimum is 0)
    point_to_voxel: Tensor  # (N,) int64: voxel of each input point
    origin: Tensor  # (3,) float: metres of voxel index 0 (coords * voxel_size + origin = voxel corner)

    @property
    def num_voxels(self) -> int:
        return self.coords.shape[0]

    def mean(self, values: Tensor) -> Tensor:
        """Average per-point values (N, C) over each voxel -> (M, C)."""
        out = values.new_zeros(self.num_voxels, values.shape[1])
        out.index_add_(0, self.point_to_voxel, values)
        count = torch.bincount(self.point_to_voxel, minlength=self.num_voxels).clamp_min(1)
        return out / count.unsqueeze(1).to(values.dtype)

    def representatives(self, generator: torch.Generator | None = None) -> Tensor:
        """One point per voxel, chosen uniformly at random among the voxel's points -> (M,) point indices."""
        n = self.point_to_voxel.shape[0]
        perm = torch.randperm(n, generator=generator)
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(n)  # each point's position in the random order
        # per voxel, the point that comes first in that order (no sort: a scatter-min of the ranks)
        first = torch.full((self.num_voxels,), n, dtype=rank.dtype).scatter_reduce_(0, self.point_to_voxel, rank, "amin")
        return perm[first]


def voxelize(points: Tensor, voxel_size: float) -> Voxelization:
    """Quantise points (N, 3) metres into voxels of `voxel_size` metres (voxel = floor(p / size))."""
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"voxelize: points must be (N, 3), got {tuple(points.shape)}")
    if points.shape[0] == 0:
        raise ValueError("voxelize: no points to voxelise")
    if not voxel_size > 0:
        raise ValueError(f"voxelize: voxel_size must be > 0 metres, got {voxel_size}")
    grid = torch.floor(points.double() / voxel_size).long()
    low = grid.min(dim=0).values
    grid = grid - low
    dims = grid.max(dim=0).values + 1
    if float(dims[0]) * float(dims[1]) * float(dims[2]) < 2.0**62:
        # one int64 key per point, ordered like the rows (x, then y, then z): 1-D unique gives the same voxels in
        # the same order as unique(dim=0), many times faster
        key = (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]
        keys, inverse = torch.unique(key, return_inverse=True)
        coords = torch.stack([keys // (dims[1] * dims[2]), keys // dims[2] % dims[1], keys % dims[2]], dim=1)
    else:
        coords, inverse = torch.unique(grid, dim=0, return_inverse=True)
    origin = (low.double() * voxel_size).to(points.dtype)
    return Voxelization(coords=coords.int(), point_to_voxel=inverse, origin=origin)
