"""Point matches between two clouds in one frame (PointContrast's pairs of points in two views)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import Tensor


def match_points(points_a: Tensor, points_b: Tensor, radius: float) -> Tuple[Tensor, Tensor]:
    """Matches between two clouds in one (world) frame: for each point of A, its nearest point of B when that is within
    `radius` metres. points (Na, 3), (Nb, 3) -> (index in A (m,), index in B (m,)) int64, A's order."""
    from scipy.spatial import cKDTree

    a, b = points_a.detach().cpu().double().numpy(), points_b.detach().cpu().double().numpy()
    if len(a) == 0 or len(b) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    dist, nearest = cKDTree(b).query(a, k=1, distance_upper_bound=radius)
    keep = np.nonzero(dist <= radius)[0]
    return torch.from_numpy(keep).long(), torch.from_numpy(nearest[keep]).long()
