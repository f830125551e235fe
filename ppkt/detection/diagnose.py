"""Where a detector loses its boxes: proposal recall and mAP at several proposal counts (the overfit check's
diagnosis, `ppkt.benchmark.confirm.stage_overfit`).

A ground-truth box is *reached* when at least one proposal's aggregation centre (the vote sampled by farthest-point
sampling, before the head's offset) lies inside it; no head can find a box that no proposal reaches. Recall that
rises with the proposal count while mAP rises with it says the proposals, not the head, limit the detector.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ppkt.detection.dataset import DetScenes, collate_detection


def inside_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(P, 3) points, (G, >= 7) boxes [cx, cy, cz, dx, dy, dz, heading(, ...)] metres / radians -> (G, P) bool: point
    p inside box g (the box turned by heading about +z, counter-clockwise)."""
    d = points[None, :, :] - boxes[:, None, :3]  # (G, P, 3)
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    local = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], d[..., 2]], axis=-1)
    return (np.abs(local) <= boxes[:, None, 3:6] / 2).all(axis=-1)


@torch.no_grad()
def proposal_recall(model, dataset: DetScenes, device: torch.device, counts: Sequence[int]) -> Dict[int, float]:
    """{proposal count: the share of the dataset's boxes that some proposal centre reaches} (eval mode; the model's
    own count restored)."""
    was_training, own = model.training, model.num_proposals
    model.eval()
    reached = {n: 0 for n in counts}
    total = 0
    try:
        for n in counts:
            model.num_proposals = n
            for batch, truth in zip(DataLoader(dataset, batch_size=1, collate_fn=collate_detection), dataset.truth):
                batch = batch.to(device)
                out = model(batch.feats, batch.coords, batch.xyz, batch.offsets)
                centres = out["aggregated_xyz"][0].cpu().numpy()
                if len(truth):
                    reached[n] += int(inside_boxes(centres, truth.astype(np.float64)).any(axis=1).sum())
                if n == counts[0]:
                    total += len(truth)
    finally:
        model.num_proposals = own
        model.train(was_training)
    return {n: reached[n] / max(total, 1) for n in counts}
