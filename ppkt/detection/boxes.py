"""3D boxes (cx, cy, cz, dx, dy, dz, heading): centre and full sizes in metres, heading in radians about +z (the box's
x side turned by `heading` from the world x axis); their corners, bird's-eye polygons and 3D IoU, axis-aligned and
oriented (the oriented boxes of SUN RGB-D; ScanNet's are axis-aligned: heading 0).
"""
from __future__ import annotations

import numpy as np


def as_boxes(boxes) -> np.ndarray:
    """(K, 7) float64 boxes; (K, 6) axis-aligned boxes get heading 0."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 7))
    b = b[None] if b.ndim == 1 else b
    if b.ndim == 2 and b.shape[1] == 6:
        b = np.concatenate([b, np.zeros((b.shape[0], 1))], axis=1)
    if b.ndim != 2 or b.shape[1] != 7:
        raise ValueError(f"boxes must be (K, 6) or (K, 7) [cx, cy, cz, dx, dy, dz(, heading)], got {b.shape}")
    return b


def bev_corners(box: np.ndarray) -> np.ndarray:
    """(4, 2) bird's-eye corners of one box, counter-clockwise."""
    cx, cy, _, dx, dy, _, h = box
    local = np.array([[dx, dy], [-dx, dy], [-dx, -dy], [dx, -dy]]) / 2
    c, s = np.cos(h), np.sin(h)
    return local @ np.array([[c, s], [-s, c]]) + [cx, cy]


def corners(box: np.ndarray) -> np.ndarray:
    """(8, 3) corners: the 4 bird's-eye corners at the bottom, then at the top."""
    xy = bev_corners(box)
    z0, z1 = box[2] - box[5] / 2, box[2] + box[5] / 2
    return np.concatenate([np.c_[xy, np.full(4, z0)], np.c_[xy, np.full(4, z1)]])


def polygon_area(p: np.ndarray) -> float:
    """Area of a simple polygon (n, 2) (shoelace; counter-clockwise positive)."""
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def clip_polygon(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """The part of convex polygon `subject` inside convex polygon `clip` (both counter-clockwise; Sutherland-Hodgman)."""
    out = subject
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]
        if len(out) == 0:
            break
        side = (b[0] - a[0]) * (out[:, 1] - a[1]) - (b[1] - a[1]) * (out[:, 0] - a[0])  # > 0: left of a->b (inside)
        kept = []
        for j in range(len(out)):
            p, q, sp, sq = out[j], out[(j + 1) % len(out)], side[j], side[(j + 1) % len(out)]
            if sp >= 0:
                kept.append(p)
            if (sp >= 0) != (sq >= 0):
                kept.append(p + (q - p) * (sp / (sp - sq)))
        out = np.array(kept).reshape(-1, 2)
    return out


def iou_3d(a, b, axis_aligned: bool = False) -> np.ndarray:
    """(Ka, Kb) 3D IoU of two box sets. axis_aligned: headings ignored (the boxes' own axes taken as x and y)."""
    a, b = as_boxes(a), as_boxes(b)
    if axis_aligned:
        a, b = a.copy(), b.copy()
        a[:, 6] = b[:, 6] = 0.0
    out = np.zeros((len(a), len(b)))
    vol_a, vol_b = a[:, 3:6].prod(1), b[:, 3:6].prod(1)
    # only pairs whose z ranges overlap and whose bird's-eye circumcircles meet can intersect
    dz = (np.minimum(a[:, None, 2] + a[:, None, 5] / 2, b[None, :, 2] + b[None, :, 5] / 2)
          - np.maximum(a[:, None, 2] - a[:, None, 5] / 2, b[None, :, 2] - b[None, :, 5] / 2))
    reach = (np.hypot(a[:, 3], a[:, 4])[:, None] + np.hypot(b[:, 3], b[:, 4])[None, :]) / 2
    close = (dz > 0) & (np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1]) <= reach)
    corners_a = {}
    for i, j in zip(*np.nonzero(close)):
        if i not in corners_a:
            corners_a[i] = bev_corners(a[i])
        inter = polygon_area(clip_polygon(corners_a[i], bev_corners(b[j]))) * dz[i, j]
        out[i, j] = inter / (vol_a[i] + vol_b[j] - inter)
    return out


def nms_3d(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.25, axis_aligned: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes (K, 7), highest score first; a box is dropped when
    its 3D IoU with a kept box of higher score exceeds `threshold`."""
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    keep = []
    while order:
        top, order = order[0], order[1:]
        keep.append(top)
        if order:
            iou = iou_3d(boxes[top][None], boxes[order], axis_aligned)[0]
            order = [k for k, v in zip(order, iou) if v <= threshold]
    return np.asarray(keep, dtype=np.int64)

