"""Inference on large scans in overlapping tiles, with the same result as one pass over the whole scan.

The scan's voxels are cut into square cores of `core` voxels in x and y; each core runs with a margin of `margin`
voxels around it, and keeps the outputs of its own voxels only. With a margin of at least the network's receptive
radius (`SparseResUNet.receptive_radius`), every kept output sees exactly the voxels it sees in the whole scan; tile
origins are multiples of 2^stages voxels, so the strided convolutions group voxels exactly as over the whole scan.
Memory is then bounded by the voxels of one tile, (core + 2 margin)^2 columns.
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Tuple

import torch
from torch import Tensor

ALIGN = 16  # 2^stages of the SR-UNet: tile origins are multiples of this


def round_up(v: int, step: int = ALIGN) -> int:
    return -(-int(v) // step) * step


def tiles(coords: Tensor, core: int, margin: int) -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
    """(voxel indices of the tile (T,), their coordinates shifted to the tile's origin (T, 3), mask (T,) of the voxels
    whose output the tile keeps) for every non-empty core; coords (M, 3) non-negative int voxel indices. core and margin
    are rounded up to multiples of ALIGN."""
    core, margin = round_up(max(core, 1)), round_up(max(margin, 0))
    c = coords.long()
    cell = torch.div(c[:, :2], core, rounding_mode="floor")
    for key in torch.unique(cell, dim=0):
        lo = key * core - margin
        hi = (key + 1) * core + margin
        inside = ((c[:, :2] >= lo) & (c[:, :2] < hi)).all(1)
        index = torch.nonzero(inside).squeeze(1)
        origin = torch.zeros(3, dtype=torch.long)
        origin[:2] = lo.clamp_min(0)  # multiples of ALIGN: core and margin are
        keep = (cell[index] == key).all(1)
        yield index, c[index] - origin, keep


def plan(coords: Tensor, core: int, margin: int) -> List[Tuple[Tensor, Tensor, Tensor]]:
    """The parts to run, as `tiles` gives them: one part holding every voxel (its own coordinates, all kept) when the
    scan fits in one tile (core + 2 margins), else the tiles."""
    c = coords.long()
    extent = c[:, :2].max(0).values - c[:, :2].min(0).values + 1
    if int(extent.max()) <= round_up(core) + 2 * round_up(margin):
        return [(torch.arange(len(c)), c, torch.ones(len(c), dtype=torch.bool))]
    return list(tiles(c, core, margin))


def run_tiled(forward: Callable[[Tensor, Tensor], Tensor], feats: Tensor, coords: Tensor, core: int, margin: int,
              on_tile: Callable[[int, int], None] = lambda done, total: None) -> Tensor:
    """forward(feats (T, C), coords (T, 3)) -> (T, K) over every part of `plan`; returns (M, K), each voxel's row from
    the tile whose core holds it. A scan that fits in one tile runs in one pass."""
    parts = plan(coords, core, margin)
    if len(parts) == 1:
        on_tile(1, 1)
        return forward(feats, parts[0][1])
    c = coords.long()
    out = None
    for i, (index, local, keep) in enumerate(parts, 1):
        result = forward(feats[index], local)
        if out is None:
            out = result.new_empty(c.shape[0], result.shape[1])
        out[index[keep]] = result[keep]
        on_tile(i, len(parts))
    return out
