"""Overlapping frame pairs of a scan (`ppkt overlaps`), for PointContrast's two-view pretraining.

The overlap of frame a with frame b is the fraction of a's points that have a point of b within `radius`:
each frame's valid depth pixels are back-projected with its pose into world coordinates (metres) and
voxelised at `voxel` (one point per occupied voxel: the mean of its pixels' points); the nearest-neighbour
query runs on a k-d tree of b's points. A pair is written once, a before b in the folder's frame order, with
the overlap of a with b (the definition is not symmetric).

Defaults: 5 cm voxels, 7.5 cm radius, 0.3 minimum overlap (PointContrast's ScanNet pairs). Frames without a
usable pose or depth are skipped and counted. Pairs whose bounding boxes, grown by the radius, do not meet
have overlap 0 and are not queried.

File (tab-separated, header `folder	frame_a	frame_b	overlap`): folder is the scan folder relative to the
root given (`.` for the root itself), frame ids as the folder names them (`000050` for 7-Scenes
`frame-000050.*`, `50` for ScanNet `color/50.jpg`), overlap with 4 decimals.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ppkt.atomic import atomic_path
from ppkt.data.frames import FrameError, FrameFolder

HEADER = ("folder", "frame_a", "frame_b", "overlap")


@dataclass(frozen=True)
class FrameOverlap:
    folder: str  # scan folder relative to the mined root, posix ("." for the root itself)
    frame_a: str
    frame_b: str
    overlap: float  # fraction of frame_a's points with a frame_b point within the radius


def frame_points(depth: np.ndarray, K: np.ndarray, pose: np.ndarray, voxel: float = 0.05) -> np.ndarray:
    """(M, 3) float64 world points, metres: the mean of the back-projected valid pixels of each `voxel` cell.

    depth (H, W) metres (0 invalid), K (3, 3) pixels, pose (4, 4) camera-to-world."""
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    cell = np.floor(world / voxel).astype(np.int64)
    cell -= cell.min(axis=0)
    extent = cell.max(axis=0) + 1
    key = (cell[:, 0] * extent[1] + cell[:, 1]) * extent[2] + cell[:, 2]  # one int64 per voxel: a 1D sort
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, weights=world[:, k], minlength=counts.shape[0]) for k in range(3)], axis=1)
    return sums / counts[:, None]


def overlap_matrix(points: Sequence[np.ndarray], radius: float = 0.075,
                   progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """(F, F) float64: [a, b] = fraction of points[a] with a point of points[b] within `radius` metres
    (1 on the diagonal; 0 where the bounding boxes grown by the radius do not meet). progress(n) after each row."""
    from scipy.spatial import cKDTree

    n = len(points)
    trees = [cKDTree(p) for p in points]
    lo = np.stack([p.min(0) for p in points]) if n else np.zeros((0, 3))
    hi = np.stack([p.max(0) for p in points]) if n else np.zeros((0, 3))
    out = np.eye(n)
    for a in range(n):
        for b in range(n):
            if a == b or (lo[a] - radius > hi[b]).any() or (lo[b] - radius > hi[a]).any():
                continue
            dist, _ = trees[b].query(points[a], k=1, distance_upper_bound=radius)
            out[a, b] = float(np.mean(dist <= radius))
        if progress is not None:
            progress(1)
    return out


def mine_folder(folder: FrameFolder, name: str, min_overlap: float = 0.3, voxel: float = 0.05,
                radius: float = 0.075, progress: Optional[Callable[[int], None]] = None,
                on_skip: Optional[Callable[[str], None]] = None) -> Tuple[List[FrameOverlap], int]:
    """The pairs (a before b) of one scan with overlap(a, b) >= min_overlap, and the number of frames skipped
    (no pose, invalid pose, no valid depth; each told to `on_skip` with its file, else warned)."""
    ids, points, skipped = [], [], 0
    for i, frame_id in enumerate(folder.names):
        try:
            depth, K, pose = folder.depth_and_pose(i)
        except FrameError as err:
            if on_skip is not None:
                on_skip(f"frame skipped: {err}")
            else:
                warnings.warn(f"ppkt overlaps: frame skipped: {err}", stacklevel=2)
            skipped += 1
            continue
        ids.append(frame_id)
        points.append(frame_points(depth, K, pose, voxel))
        if progress is not None:
            progress(1)
    m = overlap_matrix(points, radius)
    pairs = [FrameOverlap(name, ids[a], ids[b], float(m[a, b])) for a in range(len(ids)) for b in range(a + 1, len(ids))
             if m[a, b] >= min_overlap]
    return pairs, skipped


def write_overlaps(path: str | os.PathLike, pairs: Iterable[FrameOverlap]) -> Path:
    """The tab-separated pairs file, written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        lines = ["\t".join(HEADER)] + [f"{p.folder}\t{p.frame_a}\t{p.frame_b}\t{p.overlap:.4f}" for p in pairs]
        tmp.write_text("\n".join(lines) + "\n")
    return path


def read_overlaps(path: str | os.PathLike) -> List[FrameOverlap]:
    """The pairs of a file written by `write_overlaps` (FrameError naming the file and line when malformed)."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: overlaps file not found (make it with `ppkt overlaps ROOT --out {path}`)")
    lines = path.read_text().splitlines()
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        raise FrameError(f"{path}: the first line must be the header {chr(9).join(HEADER)!r}")
    out = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = line.split("\t")
        try:
            folder, a, b, overlap = cells
            out.append(FrameOverlap(folder, a, b, float(overlap)))
        except ValueError:
            raise FrameError(f"{path}:{number}: expected 4 tab-separated fields folder, frame_a, frame_b, overlap; "
                             f"got {line!r}") from None
    return out
