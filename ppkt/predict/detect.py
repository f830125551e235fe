"""A fine-tuned detector (VoteNet on the SR-UNet) on one scan: voxelised as in evaluation, boxes proposed (per tile
on large scans: a tile keeps the boxes whose centre lies in its core, then non-maximum suppression per class over
all tiles), one row per box [cx, cy, cz, dx, dy, dz, heading, class, score] (metres, radians)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ppkt.predict.scan import Scan
from ppkt.predict.tiles import plan, round_up


@dataclass
class Detection:
    boxes: np.ndarray  # (K, 9) float64, best first
    voxels: int
    tiles: int


@torch.no_grad()
def detect_scan(model, eval_cfg, scan: Scan, voxel_size: float, min_score: float, tile: float = 8.0,
                margin: float = 3.0, on_tile=lambda done, total: None, features: str = "color",
                color_dropout: float = 0.0) -> Detection:
    """Boxes of `scan` (model frame: metres, z up) with objectness x class probability >= min_score, for a model reading
    `features` (a colourless scan: as `ppkt.predict.segment.segment_scan`). Tiles: cores of `tile` metres with
    `margin` metres of context (VoteNet's votes and 0.3 m aggregation reach a few metres)."""
    from ppkt.detection.boxes import nms_3d
    from ppkt.detection.predict import proposals_to_boxes
    from ppkt.predict.segment import color_for, voxel_inputs

    color = color_for(scan, features, color_dropout)
    feats, vox = voxel_inputs(scan.coord, color, voxel_size, features)
    xyz = vox.mean(torch.from_numpy(np.ascontiguousarray(scan.coord, dtype=np.float64))).float()
    core, extra = max(1, int(round(tile / voxel_size))), int(round(margin / voxel_size))
    parts = plan(vox.coords, core, extra)
    kept = []
    for i, (index, local, keep) in enumerate(parts, 1):
        coords = torch.cat([torch.zeros(len(index), 1, dtype=torch.int32), local.int()], 1)
        out = model(feats[index], coords, xyz[index], torch.tensor([0, len(index)]))
        boxes = proposals_to_boxes(out, model.mean_size, model.num_heading_bins, min_score, eval_cfg.nms_iou,
                                   eval_cfg.axis_aligned, per_class=False)[0]
        if len(parts) > 1 and len(boxes):  # the boxes whose centre lies in this tile's core
            home = torch.div(vox.coords[index[keep][:1], :2].long(), round_up(core), rounding_mode="floor")[0]
            cell = torch.floor((torch.from_numpy(boxes[:, :2]) - vox.origin[:2].double()) / voxel_size).long()
            mine = (torch.div(cell, round_up(core), rounding_mode="floor") == home).all(1).numpy()
            boxes = boxes[mine]
        kept.append(boxes)
        on_tile(i, len(parts))
    boxes = np.concatenate(kept) if kept else np.zeros((0, 9))
    if len(parts) > 1 and len(boxes):  # duplicates of one object across neighbouring tiles
        final = []
        for c in np.unique(boxes[:, 7]):
            of_c = np.flatnonzero(boxes[:, 7] == c)
            final.extend(of_c[nms_3d(boxes[of_c, :7], boxes[of_c, 8], eval_cfg.nms_iou, eval_cfg.axis_aligned)])
        boxes = boxes[np.asarray(final, dtype=np.int64)]
    boxes = boxes[np.argsort(-boxes[:, 8], kind="stable")] if len(boxes) else boxes.reshape(0, 9)
    return Detection(boxes, vox.num_voxels, len(parts))
