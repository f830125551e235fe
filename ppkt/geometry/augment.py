"""The paper's augmentations, built so that pixel-point pairs stay correct.

2D (before back-projection): random resize and horizontal flip move image, depth and intrinsics together,
so every output pixel still back-projects to the 3D point it shows. 3D (after back-projection):
rotation about the up axis, isotropic scaling and elastic distortion move points, never pixels.
The up axis depends on the frame the points are in: the camera frame (x right, y down, z forward) has its
up axis along -y; a gravity-aligned world frame (ScanNet, the synthetic world) has it along +z.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ImageTransform:
    """Resize by (scale_y, scale_x), crop/pad at (top, left) to out_size, then optionally flip horizontally."""

    in_size: Tuple[int, int]  # (H, W) pixels of the input
    out_size: Tuple[int, int]  # (H', W') pixels of the output
    resized: Tuple[int, int]  # (H_r, W_r) size after resizing, before the crop
    top: int = 0  # crop offset in the resized image (negative = padding)
    left: int = 0
    flip: bool = False

    def intrinsics(self, K: Tensor) -> Tensor:
        """Intrinsics (3, 3) of the output image; pixel centres at integer coordinates."""
        sy, sx = self.resized[0] / self.in_size[0], self.resized[1] / self.in_size[1]
        out = K.clone()
        out[0, 0], out[1, 1] = K[0, 0] * sx, K[1, 1] * sy
        out[0, 2] = sx * (K[0, 2] + 0.5) - 0.5 - self.left
        out[1, 2] = sy * (K[1, 2] + 0.5) - 0.5 - self.top
        if self.flip:
            out[0, 2] = self.out_size[1] - 1 - out[0, 2]
        return out

    def source_pixels(self) -> Tuple[Tensor, Tensor, Tensor]:
        """Nearest input pixel (row (H',W'), col (H',W')) of every output pixel, and a validity mask."""
        h, w = self.out_size
        rows = torch.arange(h) + self.top
        cols = torch.arange(w) + self.left
        if self.flip:
            cols = cols.flip(0)
        valid_r = (rows >= 0) & (rows < self.resized[0])
        valid_c = (cols >= 0) & (cols < self.resized[1])
        src_r = torch.floor((rows + 0.5) * self.in_size[0] / self.resized[0]).long().clamp(0, self.in_size[0] - 1)
        src_c = torch.floor((cols + 0.5) * self.in_size[1] / self.resized[1]).long().clamp(0, self.in_size[1] - 1)
        grid_r, grid_c = torch.meshgrid(src_r, src_c, indexing="ij")
        valid = valid_r[:, None] & valid_c[None, :]
        return grid_r, grid_c, valid

    def nearest(self, image: Tensor, fill: float = 0.0) -> Tensor:
        """Apply to a map (H, W) or (H, W, C) by nearest sampling (depth, labels, index maps)."""
        r, c, valid = self.source_pixels()
        out = image[r, c]
        mask = valid if out.ndim == 2 else valid[..., None]
        return torch.where(mask, out, torch.full_like(out, fill))

    def bilinear(self, image: Tensor) -> Tensor:
        """Apply to an image (C, H, W) float by bilinear resizing (antialiased when shrinking)."""
        shrink = self.resized[0] < self.in_size[0]
        out = F.interpolate(image[None], size=self.resized, mode="bilinear", align_corners=False, antialias=shrink)[0]
        h, w = self.out_size
        pad = (max(0, -self.left), max(0, self.left + w - self.resized[1]), max(0, -self.top), max(0, self.top + h - self.resized[0]))
        out = F.pad(out, pad)
        top, left = self.top + pad[2], self.left + pad[0]
        out = out[:, top : top + h, left : left + w]
        return out.flip(-1) if self.flip else out


def random_image_transform(
    in_size: Sequence[int], out_size: Sequence[int], resize: Sequence[float], flip_prob: float, generator: torch.Generator
) -> ImageTransform:
    """Fit the input to out_size, times a random factor in `resize`; random crop/pad; flip with flip_prob."""
    factor = resize[0] + (resize[1] - resize[0]) * torch.rand((), generator=generator).item()
    resized = (max(1, round(out_size[0] * factor)), max(1, round(out_size[1] * factor)))
    top = _random_offset(resized[0], out_size[0], generator)
    left = _random_offset(resized[1], out_size[1], generator)
    flip = torch.rand((), generator=generator).item() < flip_prob
    return ImageTransform(tuple(in_size), tuple(out_size), resized, top, left, flip)


def _random_offset(size: int, target: int, generator: torch.Generator) -> int:
    """Crop start in [0, size - target] when larger; centred padding (negative offset) when smaller."""
    if size >= target:
        return int(torch.randint(0, size - target + 1, (), generator=generator))
    return -((target - size) // 2)


@dataclass
class ElasticField:
    """Smooth random displacement: noise on a grid of `granularity` metres, box-blurred, trilinear, x magnitude."""

    noise: Tensor  # (3, Dx, Dy, Dz) displacement per grid node (unit scale)
    origin: Tensor  # (3,) metres of grid node 0
    granularity: float  # metres between grid nodes
    magnitude: float  # metres of displacement per unit noise

    def __call__(self, points: Tensor) -> Tensor:
        size = torch.tensor(self.noise.shape[1:], dtype=points.dtype)
        scale = 2.0 / (self.granularity * (size - 1))  # align_corners=True: node i at -1 + 2 i / (D - 1)
        grid = torch.addcmul(-1.0 - self.origin.to(points.dtype) * scale, points, scale).view(1, -1, 1, 1, 3)
        # grid_sample reads grid (x, y, z) as (W, H, D): the noise is laid out (Dz, Dy, Dx) to match
        noise = self.noise.permute(0, 3, 2, 1)[None].to(points.dtype)
        disp = F.grid_sample(noise, grid, mode="bilinear", align_corners=True, padding_mode="border")
        return torch.add(points, disp.view(3, -1).T, alpha=self.magnitude)


def random_elastic_field(points: Tensor, granularity: float, magnitude: float, generator: torch.Generator) -> ElasticField:
    low = points.min(dim=0).values - granularity
    dims = (torch.div(points.max(dim=0).values - points.min(dim=0).values, granularity, rounding_mode="floor").long() + 3).tolist()
    noise = torch.randn((3, *dims), generator=generator, dtype=torch.float32)
    for _ in range(2):  # box blur (3 taps) along x, y and z, twice
        for axis in range(3):
            shape, pad = [3, 1, 1, 1, 1], [0, 0, 0]
            shape[2 + axis], pad[axis] = 3, 1
            noise = F.conv3d(noise[None], torch.full(shape, 1.0 / 3.0), padding=pad, groups=3)[0]
    return ElasticField(noise, low.float(), granularity, magnitude)


@dataclass
class PointTransform:
    """Elastic distortion(s), then rotation about the up axis and isotropic scaling."""

    rotation: Tensor = field(default_factory=lambda: torch.eye(3))  # (3, 3)
    scale: float = 1.0
    elastic: List[ElasticField] = field(default_factory=list)

    def __call__(self, points: Tensor) -> Tensor:
        for distortion in self.elastic:
            points = distortion(points)
        return (points @ self.rotation.to(points.dtype).T) * self.scale


UP_AXIS = {"camera": 1, "world": 2}  # index of the vertical axis: camera frame y (down), z-up world frame z


def up_axis_rotation(angle: float, axis: int = 1) -> Tensor:
    """Rotation (3, 3) by `angle` radians about coordinate axis `axis` (1: the camera's vertical y, 2: world z)."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = (axis + 1) % 3, (axis + 2) % 3  # right-handed: y -> (z, x), z -> (x, y)
    R = torch.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def random_point_transform(
    points: Tensor, max_angle: float, scale: Sequence[float], elastic: Sequence[Sequence[float]], generator: torch.Generator,
    up_axis: int = 1,
) -> PointTransform:
    """Random angle in [-max_angle, max_angle] radians about `up_axis`, scale in `scale`, one elastic field per
    [granularity, magnitude]."""
    angle = (2 * torch.rand((), generator=generator).item() - 1) * max_angle
    factor = scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=generator).item()
    fields = []
    for granularity, magnitude in elastic:
        fields.append(random_elastic_field(points if not fields else fields[-1](points), granularity, magnitude, generator))
    return PointTransform(up_axis_rotation(angle, up_axis), factor, fields)
