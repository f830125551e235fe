"""Training augmentations for whole scenes (fine-tuning 3D semantic segmentation).

Scenes are z-up, in metres. The defaults follow Pointcept's ScanNet semantic-segmentation recipe: rotation
about z over the full circle, a small tilt about x and y, isotropic scaling, random flips of x and y, point
jitter, elastic distortion (after the linear part), and chromatic auto-contrast / translation / jitter.
Everything draws from one torch.Generator, so a (scene, seed) pair always gives the same sample.
Geometric transforms only move points; the caller keeps every point's label on the same row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ppkt.geometry.augment import random_elastic_field


@dataclass
class SceneAugment:
    """Ranges of the random scene transforms; zero / empty / 0.0 probability switches one off."""

    rotation: float = math.pi  # max |angle| (radians) about z (pi: any heading)
    tilt: float = math.pi / 64  # max |angle| (radians) about x and about y
    scale: Tuple[float, float] = (0.9, 1.1)  # isotropic scaling range
    flip: float = 0.5  # probability of negating x, and (independently) of negating y
    jitter: Tuple[float, float] = (0.005, 0.02)  # per-point gaussian noise (sigma, clip) in metres
    elastic: List[List[float]] = field(default_factory=lambda: [[0.2, 0.4], [0.8, 1.6]])  # [granularity m, magnitude m]
    auto_contrast: float = 0.2  # probability of blending colours with their per-channel min-max stretch
    color_shift: Tuple[float, float] = (0.95, 0.05)  # (probability, max |shift| as a fraction of 255), one shift per scene
    color_jitter: Tuple[float, float] = (0.95, 0.05)  # (probability, std as a fraction of 255), per voxel

    @classmethod
    def geometric_only(cls, elastic: bool = False) -> "SceneAugment":
        """Rotation about z, scaling and flips only (plus elastic if asked): no tilt, jitter or colour change."""
        return cls(tilt=0.0, jitter=(0.0, 0.0), elastic=cls().elastic if elastic else [], auto_contrast=0.0,
                   color_shift=(0.0, 0.0), color_jitter=(0.0, 0.0))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _rot(axis: int, angle: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    m = torch.eye(3, dtype=torch.float64)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def random_linear(aug: SceneAugment, generator: torch.Generator) -> Tensor:
    """(3, 3) float64 matrix flip @ scale @ tilt_y @ tilt_x @ rot_z drawn from `aug` (applied as p @ A.T)."""
    a = _rot(2, _uniform(-aug.rotation, aug.rotation, generator))
    a = _rot(0, _uniform(-aug.tilt, aug.tilt, generator)) @ a
    a = _rot(1, _uniform(-aug.tilt, aug.tilt, generator)) @ a
    a = _uniform(aug.scale[0], aug.scale[1], generator) * a
    flips = torch.ones(3, dtype=torch.float64)
    for axis in (0, 1):
        if torch.rand((), generator=generator).item() < aug.flip:
            flips[axis] = -1.0
    return flips[:, None] * a


def augment_points(coord: Tensor, aug: SceneAugment, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Move points (N, 3) metres: linear part, jitter, then elastic fields. Returns (points (N, 3), A (3, 3))."""
    a = random_linear(aug, generator)
    out = (coord.double() @ a.T).to(coord.dtype)
    sigma, clip = aug.jitter
    if sigma > 0:
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype) * sigma
        out = out + (noise.clamp(-clip, clip) if clip > 0 else noise)
    for granularity, magnitude in aug.elastic:
        out = random_elastic_field(out, granularity, magnitude, generator)(out)
    return out, a


def augment_colors(color: Tensor, aug: SceneAugment, generator: torch.Generator) -> Tensor:
    """Chromatic augmentation of colours (M, 3) float in [0, 255] -> (M, 3) float clipped to [0, 255]."""
    color = color.clone()
    if color.shape[0] == 0:
        return color
    if torch.rand((), generator=generator).item() < aug.auto_contrast:
        lo, hi = color.min(dim=0).values, color.max(dim=0).values
        stretched = (color - lo) * (255.0 / (hi - lo).clamp_min(1e-3))
        blend = torch.rand((), generator=generator).item()
        color = (1 - blend) * color + blend * stretched
    prob, ratio = aug.color_shift
    if torch.rand((), generator=generator).item() < prob and ratio > 0:
        color = color + (torch.rand(3, generator=generator) - 0.5) * 2 * ratio * 255.0
    prob, std = aug.color_jitter
    if torch.rand((), generator=generator).item() < prob and std > 0:
        color = color + torch.randn(color.shape, generator=generator) * std * 255.0
    return color.clamp(0.0, 255.0)


def crop_nearest(coords: Tensor, max_voxels: int, generator: Optional[torch.Generator] = None,
                 centre_index: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Keep the `max_voxels` voxels nearest (Euclidean, ties by index) a random voxel of coords (M, 3) (or the voxel
    `centre_index`, drawing nothing).

    Returns (kept voxel indices (K,) int64 ascending, K = min(M, max_voxels); the centre voxel's coords (3,)).
    """
    m = coords.shape[0]
    if centre_index is None:
        centre_index = int(torch.randint(0, m, (), generator=generator))
    centre = coords[centre_index]
    if m <= max_voxels:
        return torch.arange(m), centre
    d2 = ((coords.long() - centre.long()) ** 2).sum(dim=1)
    keep = torch.argsort(d2, stable=True)[:max_voxels]
    return keep.sort().values, centre


def precrop_nearest(points: Tensor, count: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Indices (K,) int64 of the `count` points (N, 3) nearest a random point, that point first (K = min(N, count)).

    Training crops keep the voxels nearest a random voxel *after* augmentation; taking a margin of the nearest points
    before it lets augmentation and voxelisation touch only those. Rotation, tilt, flips and isotropic scaling keep
    the order of distances to the centre; jitter and elastic distortion move points by centimetres, which the margin
    absorbs.
    """
    n = points.shape[0]
    first = int(torch.randint(0, n, (), generator=generator))
    if n <= count:
        return torch.cat([torch.tensor([first]), torch.arange(n)[torch.arange(n) != first]])
    d2 = ((points - points[first]) ** 2).sum(dim=1)
    d2[first] = -1.0  # the centre first, whatever the ties
    return torch.topk(d2, count, largest=False, sorted=True).indices


def majority_label(point_to_voxel: Tensor, labels: Tensor, num_voxels: int, num_classes: int) -> Tensor:
    """Most frequent label >= 0 of each voxel's points (ties: smallest class id; none labelled: -1) -> (M,) int64."""
    out = torch.full((num_voxels,), -1, dtype=torch.long)
    ok = labels >= 0
    if not bool(ok.any()):
        return out
    keys = point_to_voxel[ok] * num_classes + labels[ok].long()
    uniq, counts = torch.unique(keys, return_counts=True)  # ascending: by voxel, then by label
    voxel, label = uniq // num_classes, uniq % num_classes
    order = torch.argsort(-counts, stable=True)  # most frequent first; equal counts keep label order
    order = order[torch.argsort(voxel[order], stable=True)]  # group by voxel, keeping that order
    voxel, label = voxel[order], label[order]
    first = torch.ones_like(voxel, dtype=torch.bool)
    first[1:] = voxel[1:] != voxel[:-1]
    out[voxel[first]] = label[first]
    return out


def check_ranges(aug: SceneAugment) -> None:
    """ValueError naming the first field out of range."""
    problems: Sequence[Tuple[bool, str]] = [
        (aug.rotation >= 0 and aug.tilt >= 0, f"rotation/tilt must be >= 0 radians, got {aug.rotation}, {aug.tilt}"),
        (0 < aug.scale[0] <= aug.scale[1], f"scale must be 0 < low <= high, got {aug.scale}"),
        (0 <= aug.flip <= 1, f"flip must be a probability, got {aug.flip}"),
        (all(g > 0 and m >= 0 for g, m in aug.elastic), f"elastic needs [granularity > 0, magnitude >= 0] pairs, got {aug.elastic}"),
    ]
    for ok, message in problems:
        if not ok:
            raise ValueError(f"SceneAugment: {message}")
