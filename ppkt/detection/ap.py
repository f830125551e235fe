"""Average precision of 3D detections (VoteNet's / PASCAL VOC's all-point AP) at a 3D IoU threshold.

Per class, the detections of all scenes are ranked by score; each is a true positive when its best-overlapping
ground-truth box of the same class and scene has IoU > threshold (as VoteNet and VOC) and is not yet taken, else a
false positive. With recall r_k and precision p_k after the k-th detection, AP is the area under the monotone precision envelope
(p_k replaced by the largest precision at any recall >= r_k): AP = sum_k (r_k - r_{k-1}) * max_{j >= k} p_j.
mAP is the mean AP over the classes that have at least one ground-truth box.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ppkt.detection.boxes import as_boxes, iou_3d


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """All-point AP of detections with scores (K,) and true-positive flags (K,) against num_gt objects."""
    if num_gt == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hit = np.asarray(tp, dtype=np.float64)[order]
    if hit.size == 0:
        return 0.0
    recall = np.cumsum(hit) / num_gt
    precision = np.cumsum(hit) / np.arange(1, hit.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * envelope))


def match_class(predictions: Mapping[str, np.ndarray], truths: Mapping[str, np.ndarray], threshold: float,
                axis_aligned: bool) -> tuple:
    """(scores (K,), tp flags (K,), number of ground-truth boxes) of one class over the scenes.
    predictions[scene]: (k, 8) boxes + score; truths[scene]: (g, 7) boxes."""
    scores, tps, num_gt = [], [], sum(len(t) for t in truths.values())
    for scene, pred in predictions.items():
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 8)
        gt = as_boxes(truths.get(scene, np.zeros((0, 7))))
        taken = np.zeros(len(gt), dtype=bool)
        order = np.argsort(-pred[:, 7], kind="stable")  # within a scene, the higher score claims first
        iou = iou_3d(pred[order, :7], gt, axis_aligned) if len(gt) else np.zeros((len(pred), 0))
        for row, k in enumerate(order):
            hit = False
            if len(gt):
                j = int(np.argmax(iou[row]))
                if iou[row, j] > threshold and not taken[j]:
                    taken[j] = hit = True
            scores.append(pred[k, 7])
            tps.append(hit)
    return np.asarray(scores), np.asarray(tps), num_gt


def evaluate_detections(predictions: Mapping[str, np.ndarray], truths: Mapping[str, np.ndarray],
                        class_names: Sequence[str], thresholds: Sequence[float] = (0.25, 0.5),
                        axis_aligned: bool = False) -> Dict:
    """Per-class AP and mAP at each IoU threshold.

    predictions[scene]: (K, 9) rows [cx, cy, cz, dx, dy, dz, heading, class, score]; truths[scene]: (G, 8) rows
    [cx, cy, cz, dx, dy, dz, heading, class] (every scene of the split, also those without boxes). Returns
    {"mAP@0.25": float, ..., "per_class": {name: {"AP@0.25": float or None, ...}}, "gt_boxes": {name: count}};
    a class without ground truth has AP None and is left out of the mean.
    """
    out: Dict = {"per_class": {n: {} for n in class_names}, "gt_boxes": {}}
    for name in class_names:
        out["gt_boxes"][name] = 0
    for t in thresholds:
        aps = []
        for c, name in enumerate(class_names):
            preds = {s: _rows(p, c, 9)[:, [0, 1, 2, 3, 4, 5, 6, 8]] for s, p in predictions.items()}
            gts = {s: _rows(g, c, 8)[:, :7] for s, g in truths.items()}
            scores, tp, num_gt = match_class(preds, gts, t, axis_aligned)
            out["gt_boxes"][name] = num_gt
            ap: Optional[float] = None if num_gt == 0 else average_precision(tp, scores, num_gt)
            out["per_class"][name][f"AP@{t:g}"] = ap
            if ap is not None:
                aps.append(ap)
        out[f"mAP@{t:g}"] = float(np.mean(aps)) if aps else float("nan")
    return out


def _rows(a: np.ndarray, c: int, width: int) -> np.ndarray:
    """The rows of class c (column 7) of a (K, width) array."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, width)
    return a[np.round(a[:, 7]).astype(int) == c]
