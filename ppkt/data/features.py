"""What a network reads per voxel (`data.features`): colour, colour and normals, normals, or nothing but geometry.

| features       | channels | per voxel                                                                  |
| color          | 3        | mean RGB / 255 - 0.5, in [-0.5, 0.5] (every ppkt model before this setting) |
| color+normal   | 6        | the colour, then the unit normal                                           |
| normal         | 3        | the unit normal                                                            |
| none           | 3        | NO_COLOR in every channel: occupancy only (the network sees geometry)      |

Normals are estimated on the voxel grid (`voxel_normals`: the least-variance direction of the occupied voxels in the
5 x 5 x 5 window around each, turned towards the cloud's centre), after augmentation and cropping, the same way in
training, evaluation and prediction: a scan's own normals are not needed. Colour dropout (`data.color_dropout`) gives a training sample NO_COLOR in place of its colour, which is
exactly the input of `none`: a model trained with it reads scans with and without colour.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

FEATURES = {"color": 3, "color+normal": 6, "normal": 3, "none": 3}
NO_COLOR = 0.5  # the colour channels of a voxel without colour (dropped or absent): white, as (255 / 255 - 0.5)
WINDOW = 2  # voxels each side: the neighbourhood of a voxel's normal is its 5 x 5 x 5 window


def in_channels(features: str) -> int:
    if features not in FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}; got {features!r}")
    return FEATURES[features]


def reads_color(features: str) -> bool:
    return features in ("color", "color+normal")


def voxel_normals(coords: Tensor, chunk: int = 16384) -> Tensor:
    """(M, 3) float32 unit normals of M occupied voxels (M, 3) int indices: per voxel, the eigenvector of the smallest
    eigenvalue of the covariance of the occupied voxels in its window (pure torch on the grid: no tree search, the
    same result in any process), its sign towards the cloud's centre; a voxel alone in its window gets (0, 0, 1)."""
    c = coords.long()
    m = c.shape[0]
    low = c.min(0).values - WINDOW
    span = c.max(0).values - low + WINDOW + 1
    key = lambda v: ((v[..., 0] - low[0]) * span[1] + (v[..., 1] - low[1])) * span[2] + (v[..., 2] - low[2])  # noqa: E731
    keys, _ = torch.sort(key(c))
    r = torch.arange(-WINDOW, WINDOW + 1)
    offsets = torch.cartesian_prod(r, r, r)  # (125, 3)
    centre = c.double().mean(0)
    out = torch.empty(m, 3, dtype=torch.float64)
    for s in range(0, m, chunk):
        nb = c[s:s + chunk, None, :] + offsets[None]  # (n, 125, 3)
        k = key(nb)
        pos = torch.searchsorted(keys, k).clamp_max(m - 1)
        present = (keys[pos] == k).double()[..., None]  # (n, 125, 1)
        count = present.sum(1)  # (n, 1)
        mean = (nb.double() * present).sum(1) / count
        d = (nb.double() - mean[:, None]) * present
        cov = d.transpose(1, 2) @ d  # (n, 3, 3)
        _, vecs = torch.linalg.eigh(cov)
        n = vecs[:, :, 0]
        n = torch.where((count > 2), n, n.new_tensor([0.0, 0.0, 1.0]).expand_as(n))
        flip = ((centre - c[s:s + chunk].double()) * n).sum(1) < 0
        n[flip] *= -1
        out[s:s + chunk] = n
    return out.float()


def assemble(features: str, color: Optional[Tensor], coords: Tensor) -> Tensor:
    """The network input (M, in_channels(features)) float32 of M voxels: `color` (M, 3) mean RGB / 255 - 0.5 (None: no
    colour, NO_COLOR used), `coords` (M, 3) int voxel indices (read for normals only)."""
    m = coords.shape[0]
    parts = []
    if features in ("color", "color+normal", "none"):
        parts.append(color.float() if color is not None and features != "none" else torch.full((m, 3), NO_COLOR))
    if features in ("color+normal", "normal"):
        parts.append(voxel_normals(coords))
    return torch.cat(parts, 1) if len(parts) > 1 else parts[0]
