"""Pinhole back-projection pi(z, d) -> (c, f) of the PPKT paper, and its inverse (projection).

Convention: pixel (u, v) is column u, row v, with pixel centres at integer u, v; a pixel at depth d maps to
the camera-frame point X = (u - cx) d / fx, Y = (v - cy) d / fy, Z = d (x right, y down, z forward).
Poses are (4, 4) camera-to-world. All functions are vectorised torch and run on any device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BackProjection", "backproject", "project"]


@dataclass
class BackProjection:
    """Result of :func:`backproject`.

    points: (N, 3) metres, camera frame, or world frame if a pose was given.
    features: (N, C) the values of ``features`` at the valid pixels, or None.
    pixel_index: (N,) int64 row-major flat pixel index v * W + u of each point.
    """

    points: Tensor
    features: Tensor | None
    pixel_index: Tensor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float16 / bfloat16 are too coarse for pixel coordinates: compute in float32 at least.
    return torch.promote_types(dtype, torch.float32)


def _check_matrix(m: Tensor, shape: tuple[int, int], name: str) -> None:
    if not isinstance(m, Tensor) or tuple(m.shape) != shape:
        got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise ValueError(f"{name} must be a tensor of shape {shape}, got {got}")


def _rigid(pose: Tensor, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    pose = pose.to(device=device, dtype=dtype)
    return pose[:3, :3], pose[:3, 3]


def backproject(depth: Tensor, intrinsics: Tensor, features: Tensor | None = None,
                pose: Tensor | None = None) -> BackProjection:
    """pi(z, d) -> (c, f): lift the valid pixels of a depth map to 3D points with their features.

    depth: (H, W) float metres; 0, NaN, inf and negative values are invalid and skipped.
    intrinsics: (3, 3) pinhole K in pixels. Pixel centres are at integer (u, v): pixel (u, v) at depth d
    gives X = (u - cx) d / fx, Y = (v - cy) d / fy, Z = d.
    features: optional (H, W, C) RGB image or 2D feature map at the depth resolution (channels last).
    pose: optional (4, 4) camera-to-world; then points are in the world frame.
    Returns points (N, 3) in depth's dtype (float32 at least), features (N, C) in their own dtype,
    pixel_index (N,) int64 = v * W + u, ordered row-major.
    """
    if not isinstance(depth, Tensor) or depth.dim() != 2:
        got = tuple(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__
        raise ValueError(f"depth must be a (H, W) tensor, got {got}")
    if not depth.is_floating_point():
        raise ValueError(f"depth must be a float tensor in metres, got {depth.dtype}")
    _check_matrix(intrinsics, (3, 3), "intrinsics")
    if pose is not None:
        _check_matrix(pose, (4, 4), "pose")
    H, W = depth.shape
    if features is not None and (not isinstance(features, Tensor) or features.dim() != 3
                                 or tuple(features.shape[:2]) != (H, W)):
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be (H, W, C) = ({H}, {W}, C) to match the depth map of size "
                         f"{H}x{W}, got {got} (for a (C, H, W) map pass fmap.permute(1, 2, 0))")

    dtype, device = _compute_dtype(depth.dtype), depth.device
    flat = depth.reshape(-1)
    pixel_index = torch.nonzero(torch.isfinite(flat) & (flat > 0)).squeeze(1)
    d = flat[pixel_index].to(dtype)
    u = (pixel_index % W).to(dtype)
    v = torch.div(pixel_index, W, rounding_mode="floor").to(dtype)
    K = intrinsics.to(device=device, dtype=dtype)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    points = torch.stack([(u - cx) * d / fx, (v - cy) * d / fy, d], dim=1)
    if pose is not None:
        R, t = _rigid(pose, dtype, device)
        points = points @ R.T + t
    feats = None
    if features is not None:
        feats = features.reshape(H * W, -1)[pixel_index.to(features.device)]
    return BackProjection(points=points, features=feats, pixel_index=pixel_index)


def project(points: Tensor, intrinsics: Tensor, pose: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Project 3D points into a pinhole camera (inverse of :func:`backproject`).

    points: (N, 3) metres, camera frame, or world frame if ``pose`` (4, 4 camera-to-world) is given.
    intrinsics: (3, 3) K in pixels. Returns uv (N, 2) pixel coordinates [u, v] (pixel centres at integers)
    and depth (N,) = camera-frame Z in metres; uv is NaN for points with Z <= 0 (behind the camera).
    """
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 3:
        got = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"points must be a (N, 3) tensor, got {got}")
    _check_matrix(intrinsics, (3, 3), "intrinsics")
    dtype, device = _compute_dtype(points.dtype), points.device
    p = points.to(dtype)
    if pose is not None:
        _check_matrix(pose, (4, 4), "pose")
        world_to_cam = torch.linalg.inv(pose.to(device=device, dtype=dtype))
        p = p @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    K = intrinsics.to(device=device, dtype=dtype)
    z = p[:, 2]
    zs = torch.where(z > 0, z, torch.full_like(z, float("nan")))
    uv = torch.stack([K[0, 0] * p[:, 0] / zs + K[0, 2], K[1, 1] * p[:, 1] / zs + K[1, 2]], dim=1)
    return uv, z
