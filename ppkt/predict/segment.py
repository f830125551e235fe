"""A fine-tuned segmentation model on one scan: voxelised as in evaluation, predicted (in tiles for large scans),
one class per input point (that of the voxel it falls in)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ppkt.errors import UserError
from ppkt.predict.scan import Scan
from ppkt.predict.tiles import run_tiled


@dataclass
class Segmentation:
    labels: np.ndarray  # (N,) int64 class id per input point, in input order
    voxels: int
    tiles: int


def voxel_inputs(coord: np.ndarray, color: np.ndarray, voxel_size: float):
    """(feats (M, 3) float32 mean colour / 255 - 0.5, coords (M, 3) int voxel indices, point_to_voxel (N,)), exactly as
    `ppkt.data.scenes.SegScenes` makes them for evaluation."""
    from ppkt.geometry.voxelize import voxelize

    vox = voxelize(torch.from_numpy(np.ascontiguousarray(coord, dtype=np.float32)), voxel_size)
    feats = (vox.mean(torch.from_numpy(np.ascontiguousarray(color, dtype=np.float32))) / 255.0 - 0.5).float()
    return feats, vox.coords, vox.point_to_voxel


@torch.no_grad()
def segment_scan(model, scan: Scan, voxel_size: float, tile: float = 8.0, margin: Optional[int] = None,
                 on_tile=lambda done, total: None) -> Segmentation:
    """Class per point of `scan` (model frame: metres, z up). tile: the core of a tile in metres; margin: voxels of
    context around it (default the backbone's receptive radius: the result equals one pass over the whole scan)."""
    if scan.color is None:
        raise UserError(f"{scan.source}: the model reads colour (3 input channels: RGB), and this scan has none; use "
                        "a scan with colour or a model trained without it")
    feats, coords, point_to_voxel = voxel_inputs(scan.coord, scan.color, voxel_size)
    margin = model.backbone.receptive_radius() if margin is None else margin
    count = [0]

    def forward(f, c):
        batch = torch.cat([torch.zeros(len(c), 1, dtype=torch.int32), c.int()], 1)
        return model(f, batch, 1).argmax(1, keepdim=True)

    def tile_done(done, total):
        count[0] = total
        on_tile(done, total)

    voxel_pred = run_tiled(forward, feats, coords, max(1, int(round(tile / voxel_size))), margin, tile_done)[:, 0]
    return Segmentation(voxel_pred[point_to_voxel].numpy().astype(np.int64), int(coords.shape[0]), count[0])
