"""PointNet++'s point operations in plain PyTorch (CPU or GPU): farthest-point sampling, ball query and grouping,
as VoteNet uses them (seeds from the backbone's voxels, proposals from the votes). Farthest-point sampling of CPU
tensors runs in `fpsample` (compiled, ~4x faster; the same points in the same order, except that among equally far
points it may pick another than the lowest index) where it is installed."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

try:
    import fpsample
except ImportError:  # no wheel for this Python / platform: the PyTorch loop below does the same
    fpsample = None


def farthest_point_sample(xyz: Tensor, k: int, start: int = 0) -> Tensor:
    """(k,) int64 indices of `xyz` (N, 3), or (B, k) of a batch (B, N, 3) in one pass: `start` first, then each next
    point the one farthest from those chosen (Euclidean; ties: the lowest index in the PyTorch loop, any of them in
    fpsample). With k >= N, all N points in that order and then the first again. A batch of clouds of different
    sizes: pad each with copies of its point `start`, which are never chosen before all its points are."""
    single = xyz.dim() == 2
    x = xyz[None] if single else xyz
    b, n, _ = x.shape
    if n == 0:
        raise ValueError("farthest_point_sample: no points")
    if fpsample is not None and x.device.type == "cpu" and k < n:
        pts = x.detach().to(torch.float32).numpy()
        chosen = torch.from_numpy(np.stack([fpsample.fps_sampling(p, k, start_idx=start) for p in pts]).astype(np.int64))
        return chosen[0] if single else chosen
    rows = torch.arange(b, device=x.device)
    chosen = torch.empty(b, k, dtype=torch.long, device=x.device)
    dist = torch.full((b, n), float("inf"), dtype=x.dtype, device=x.device)
    last = torch.full((b,), start, dtype=torch.long, device=x.device)
    for i in range(k):
        chosen[:, i] = last
        dist = torch.minimum(dist, ((x - x[rows, last][:, None]) ** 2).sum(2))
        last = torch.argmax(dist, dim=1)
    return chosen[0] if single else chosen


def ball_query(xyz: Tensor, centers: Tensor, radius: float, nsample: int) -> Tensor:
    """(K, nsample) int64: for each centre (K, 3), the first `nsample` points of `xyz` (N, 3) (in index order) within
    `radius`, the list padded with its first entry (PointNet++'s convention); a centre without any point gets 0s."""
    d2 = torch.cdist(centers.double(), xyz.double()) ** 2  # (K, N)
    inside = d2 <= radius * radius
    # the index order of the points inside: rank them by (not inside, index) and keep the first nsample
    n = xyz.shape[0]
    key = torch.where(inside, torch.arange(n, device=xyz.device), torch.full_like(d2, n, dtype=torch.long))
    first = torch.sort(key, dim=1).values[:, :nsample]
    if first.shape[1] < nsample:  # fewer points than nsample in all: pad with the "none" marker
        first = torch.cat([first, torch.full((first.shape[0], nsample - first.shape[1]), n, device=xyz.device)], 1)
    pad = first[:, :1].expand_as(first)
    out = torch.where(first == n, pad, first)
    return torch.where(out == n, torch.zeros_like(out), out)


def group(values: Tensor, index: Tensor) -> Tensor:
    """values (N, C) gathered at index (K, S) -> (K, S, C)."""
    return values[index]
