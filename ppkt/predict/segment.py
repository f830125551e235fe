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


def voxel_inputs(coord: np.ndarray, color: Optional[np.ndarray], voxel_size: float, features: str = "color"):
    """(feats (M, C) float32, the Voxelization: coords (M, 3) int voxel indices, point_to_voxel (N,)), exactly as
    `ppkt.data.scenes.SegScenes` makes them for evaluation (`ppkt.data.features`; color None: NO_COLOR)."""
    from ppkt.data.features import assemble
    from ppkt.geometry.voxelize import voxelize

    vox = voxelize(torch.from_numpy(np.ascontiguousarray(coord, dtype=np.float32)), voxel_size)
    feats = None if color is None else \
        (vox.mean(torch.from_numpy(np.ascontiguousarray(color, dtype=np.float32))) / 255.0 - 0.5).float()
    if features != "color" or feats is None:
        feats = assemble(features, feats, vox.coords)
    return feats, vox


def color_for(scan: Scan, features: str, color_dropout: float) -> Optional[np.ndarray]:
    """The scan's colour when the model reads colour (None: it reads none, or the scan has none and the model was
    trained with colour dropout: then the constant colour of a dropped sample); a colour model without dropout and a
    scan without colour: UserError naming both."""
    from ppkt.data.features import reads_color

    if not reads_color(features):
        return None
    if scan.color is None and not color_dropout:
        raise UserError(f"{scan.source}: the model reads colour (data.features={features}), and this scan has none; "
                        "use a scan with colour, or a model fine-tuned with data.color_dropout > 0 or "
                        "data.features=normal / none")
    return scan.color


def missing_color_note(scan: Scan, features: str, color_dropout: float) -> str:
    from ppkt.data.features import reads_color

    if reads_color(features) and scan.color is None:
        return (f"the scan has no colour: the model (trained with colour dropout {color_dropout:g}) read the constant "
                "colour of a dropped sample")
    return ""


@torch.no_grad()
def segment_scan(model, scan: Scan, voxel_size: float, tile: float = 8.0, margin: Optional[int] = None,
                 on_tile=lambda done, total: None, features: str = "color", color_dropout: float = 0.0) -> Segmentation:
    """Class per point of `scan` (model frame: metres, z up) for a model reading `features`. tile: the core of a tile in
    metres; margin: voxels of context around it (default the backbone's receptive radius: the result equals one pass
    over the whole scan). A scan without colour for a colour model: `color_for`."""
    color = color_for(scan, features, color_dropout)
    feats, vox = voxel_inputs(scan.coord, color, voxel_size, features)
    coords, point_to_voxel = vox.coords, vox.point_to_voxel
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
