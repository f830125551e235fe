"""VoteNet's proposals -> scored boxes of each scene (K, 9) [cx, cy, cz, dx, dy, dz, heading, class, score].

Each proposal becomes one box: centre, heading (the best bin plus its residual), size (the mean size of the best
size cluster plus its residual), class = the best class; score = objectness probability x class probability.
Proposals whose objectness probability is below `min_score` are dropped (VoteNet's conf_thresh, 0.05; 0 keeps them
all, which never lowers all-point AP: the extra boxes rank last), then greedy non-maximum suppression per class at
3D IoU `nms_iou` (0.25, as VoteNet) removes duplicates.
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
                       nms_iou: float = 0.25, axis_aligned: bool = False) -> List[np.ndarray]:
    """Per scene of the batch, the (K, 9) float64 boxes kept, best first."""
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
    for r, o in zip(rows.double().cpu().numpy(), obj.cpu().numpy()):
        r = r[o >= min_score]
        kept = [r[c_rows][nms_3d(r[c_rows, :7], r[c_rows, 8], nms_iou, axis_aligned)]
                for c_rows in (r[:, 7] == c for c in np.unique(r[:, 7]))]
        r = np.concatenate(kept) if kept else np.zeros((0, 9))
        scenes.append(r[np.argsort(-r[:, 8], kind="stable")])
    return scenes
