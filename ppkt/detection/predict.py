"""VoteNet's proposals -> scored boxes of each scene (K, 9) [cx, cy, cz, dx, dy, dz, heading, class, score].

Each proposal becomes one box: centre, heading (the best bin plus its residual), size (the mean size of the best
size cluster plus its residual), class = the best class; score = objectness probability x class probability.
Proposals whose objectness probability is below `min_score` are dropped (VoteNet's conf_thresh, 0.05; 0 keeps them
all, which never lowers all-point AP: the extra boxes rank last), then greedy non-maximum suppression per class at
3D IoU `nms_iou` (0.25, as VoteNet) removes duplicates. VoteNet's evaluation then lists every kept box once per class
(`per_class`), so a box whose class is uncertain still counts for the right one, at a lower score.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
from torch import Tensor

from ppkt.detection.boxes import nms_3d
from ppkt.detection.coder import bin_to_angle


@torch.no_grad()
def proposals_to_boxes(out: Dict[str, Tensor], mean_size: Tensor, num_heading_bins: int, min_score: float = 0.05,
                       nms_iou: float = 0.25, axis_aligned: bool = False, per_class: bool = False) -> List[np.ndarray]:
    """Per scene of the batch, the (K, 9) float64 boxes kept, best first. per_class (VoteNet's per_class_proposal):
    every box kept by NMS is given once for every class c, scored objectness probability x probability of c."""
    obj = torch.softmax(out["objectness"], dim=2)[..., 1]
    sem = torch.softmax(out["sem_scores"], dim=2)
    sem_prob, cls = sem.max(dim=2)
    hbin = out["heading_scores"].argmax(dim=2)
    heading = bin_to_angle(hbin, out["heading_residuals"].gather(2, hbin[..., None])[..., 0], num_heading_bins)
    scls = out["size_scores"].argmax(dim=2)
    residual = out["size_residuals"].gather(2, scls[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
    size = (mean_size.to(residual)[scls] + residual).clamp_min(1e-3)
    rows = torch.cat([out["center"], size, heading[..., None], cls[..., None].to(size), (obj * sem_prob)[..., None]], 2)
    scenes = []
    for r, o, p in zip(rows.double().cpu().numpy(), obj.double().cpu().numpy(), sem.double().cpu().numpy()):
        live, kept = np.nonzero(o >= min_score)[0], []
        for c in np.unique(r[live, 7]):
            of_c = live[r[live, 7] == c]
            kept.extend(of_c[nms_3d(r[of_c, :7], r[of_c, 8], nms_iou, axis_aligned)])
        kept = np.asarray(kept, dtype=np.int64)
        boxes = r[kept]
        if per_class:
            c = p.shape[1]
            boxes = np.repeat(boxes, c, axis=0)
            boxes[:, 7] = np.tile(np.arange(c), len(kept))
            boxes[:, 8] = (o[kept, None] * p[kept]).reshape(-1)
        scenes.append(boxes[np.argsort(-boxes[:, 8], kind="stable")])
    return scenes
