"""2D predictions of many views carried onto a scene's 3D points (the pilot study, paper Section 3.1).

A point is seen by a frame when it projects inside the image, in front of the camera, and its camera depth is within
`tolerance` metres of the frame's depth at that pixel (the depth test: a point behind a nearer surface is occluded,
and a pixel without depth sees nothing). Each point sums the class scores of the pixels that see it over all views;
its label is the argmax, -1 when no view saw it.
"""
from __future__ import annotations

from typing import Iterable, Tuple

import torch
from torch import Tensor

from ppkt.geometry.backproject import project


def visible_pixels(points: Tensor, depth: Tensor, intrinsics: Tensor, pose: Tensor,
                   tolerance: float = 0.1) -> Tuple[Tensor, Tensor]:
    """The points a frame sees and their pixels.

    points (N, 3) world metres; depth (H, W) metres, 0 = no measurement; intrinsics (3, 3) pixels; pose (4, 4)
    camera-to-world. Returns (index (n,) int64 into points, pixel (n,) int64 flat v * W + u), pixel centres at
    integer (u, v) (the nearest pixel of the projection).
    """
    h, w = depth.shape
    uv, z = project(points, intrinsics, pose)
    u, v = torch.round(uv[:, 0]), torch.round(uv[:, 1])
    inside = torch.isfinite(u) & torch.isfinite(v) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    index = inside.nonzero().squeeze(1)
    pixel = v[index].long() * w + u[index].long()
    d = depth.reshape(-1)[pixel].to(z.dtype)
    seen = (d > 0) & ((z[index] - d).abs() <= tolerance)
    return index[seen], pixel[seen]


def aggregate_views(points: Tensor, views: Iterable[Tuple[Tensor, Tensor, Tensor, Tensor]], num_classes: int,
                    tolerance: float = 0.1) -> Tuple[Tensor, Tensor]:
    """Sum over views of the class scores at the pixels that see each point.

    views: (scores (C, H, W), depth (H, W), intrinsics (3, 3), pose (4, 4)) per frame, scores e.g. softmax
    probabilities at the depth image's resolution. Returns (summed scores (N, C) float64, views seeing each point (N,)).
    """
    total = torch.zeros(points.shape[0], num_classes, dtype=torch.float64)
    count = torch.zeros(points.shape[0], dtype=torch.long)
    for scores, depth, intrinsics, pose in views:
        if scores.shape != (num_classes, *depth.shape):
            raise ValueError(f"aggregate_views: scores {tuple(scores.shape)} must be ({num_classes}, H, W) for depth "
                             f"{tuple(depth.shape)}")
        index, pixel = visible_pixels(points, depth, intrinsics, pose, tolerance)
        total.index_add_(0, index, scores.reshape(num_classes, -1)[:, pixel].T.to(torch.float64))
        count.index_add_(0, index, torch.ones_like(index))
    return total, count


def vote(total: Tensor, count: Tensor) -> Tensor:
    """(N,) int64 labels: the class of the largest summed score, -1 for points no view saw."""
    return torch.where(count > 0, total.argmax(1), torch.full_like(count, -1))
