"""Two overlapping views of one scan for PointContrast (`loss.name=pointcontrast`).

A sample is one row of a pairs file (`ppkt overlaps`): frames a and b of a scan, each back-projected into the z-up
world frame (`data.frame=world`, which needs the poses), augmented on its own (its own rotation about z and scale:
the seed of view b is derived from view a's) and voxelised exactly as PPKT's samples are (`make_sample`). The
matches are found before augmentation: voxel i of view a and voxel j of view b match when j's point is the nearest
of view b to i's point in world coordinates and lies within `loss.match_radius` voxels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ppkt.config import AugmentConfig, DataConfig
from ppkt.data.frames import FrameError, FrameFolder, find_frame_folders, open_frame_folder
from ppkt.data.overlap import FrameOverlap, read_overlaps
from ppkt.data.pairs import PairSample, make_sample
from ppkt.geometry.match import match_points

VIEW_B_SEED = 7919  # view b is drawn with seed * VIEW_B_SEED + 1: independent of view a's draw


@dataclass
class MatchedView:
    a: PairSample
    b: PairSample
    match_a: Tensor  # (m,) int64 voxel of view a
    match_b: Tensor  # (m,) int64 its matching voxel of view b
    source: str
    replaced: List[Tuple[str, str]] = field(default_factory=list)  # (pair, reason) of unusable pairs passed over


@dataclass
class ViewBatch:
    coords: Tensor  # (M, 4) int32 [view, x, y, z]; view 2p is pair p's a, 2p + 1 its b
    feats: Tensor  # (M, 3)
    match_a: Tensor  # (m,) int64 rows of coords / feats
    match_b: Tensor  # (m,) int64
    views: int
    skipped: List[Tuple[str, str]]

    @property
    def batch_size(self) -> int:
        """Frames in the batch (two per pair)."""
        return self.views

    def to(self, device: torch.device) -> "ViewBatch":
        return ViewBatch(self.coords.to(device, non_blocking=True), self.feats.to(device, non_blocking=True),
                         self.match_a.to(device), self.match_b.to(device), self.views, self.skipped)


class MatchedViews(Dataset):
    """The pairs of `overlaps_file` whose scan folders are found below `data.roots`; key (row, seed) -> MatchedView."""

    def __init__(self, data: DataConfig, aug: AugmentConfig, overlaps_file: str, match_radius: float = 1.5):
        if data.frame != "world":
            raise FrameError("pointcontrast matches the two views in world coordinates: set data.frame=world "
                             "(and give frames with poses)")
        self.data, self.aug, self.radius = data, aug, match_radius * data.voxel_size
        folders: Dict[str, FrameFolder] = {}
        for root in data.roots:
            for path in find_frame_folders(root):
                folder = open_frame_folder(path, layout=data.layout, depth_scale=data.depth_scale,
                                           max_depth=data.max_depth)
                rel = path.relative_to(root).as_posix() if Path(path) != Path(root) else "."
                folders[rel] = folders.get(rel, folder)
        rows = read_overlaps(overlaps_file)
        missing = sorted({r.folder for r in rows} - set(folders))
        if missing:
            raise FrameError(f"{overlaps_file}: scan folder(s) {missing[:3]} not found below data.roots {list(data.roots)}")
        self.folders = folders
        self.rows: List[FrameOverlap] = rows
        self.frame_index = {name: {n: i for i, n in enumerate(f.names)} for name, f in folders.items()}
        if not self.rows:
            raise FrameError(f"{overlaps_file}: no pairs (lower --min-overlap when running `ppkt overlaps`)")

    def __len__(self) -> int:
        return len(self.rows)

    def view(self, folder: str, frame: str, seed: int) -> PairSample:
        index = self.frame_index[folder].get(frame)
        if index is None:
            raise FrameError(f"{self.folders[folder].root}: frame {frame} of the overlaps file not found")
        return make_sample(self.folders[folder][index], self.data, self.aug, torch.Generator().manual_seed(seed))

    def __getitem__(self, key: Tuple[int, int]) -> MatchedView:
        """The views of pair `row` drawn with `seed`. A pair with an unusable frame or without matches is replaced by
        the next usable row (the same in every run and process) and listed in the MatchedView's `replaced`."""
        row, seed = key
        replaced: List[Tuple[str, str]] = []
        for step in range(len(self.rows)):
            r = self.rows[(row + step) % len(self.rows)]
            name = f"{r.folder} frames {r.frame_a}, {r.frame_b}"
            try:
                a = self.view(r.folder, r.frame_a, seed)
                b = self.view(r.folder, r.frame_b, seed * VIEW_B_SEED + 1)
                match_a, match_b = match_points(a.points, b.points, self.radius)
                if match_a.numel() == 0:
                    raise FrameError(f"no matching points within {self.radius:.3f} m")
            except FrameError as err:
                replaced.append((name, str(err)))
                continue
            return MatchedView(a, b, match_a, match_b, name, replaced)
        raise FrameError(f"none of the {len(self.rows)} pairs is usable; the first: {replaced[0][1]}")


def collate_views(pairs: Sequence[MatchedView]) -> ViewBatch:
    """Views a, b of pair p become batch entries 2p, 2p + 1; matches become rows of the concatenated voxels."""
    coords, feats, match_a, match_b, offset = [], [], [], [], 0
    for p, pair in enumerate(pairs):
        for v, sample in enumerate((pair.a, pair.b)):
            n = sample.coords.shape[0]
            coords.append(torch.cat([torch.full((n, 1), 2 * p + v, dtype=torch.int32), sample.coords.int()], dim=1))
            feats.append(sample.feats)
            if v == 0:
                match_a.append(pair.match_a + offset)
            else:
                match_b.append(pair.match_b + offset)
            offset += n
    return ViewBatch(torch.cat(coords), torch.cat(feats), torch.cat(match_a), torch.cat(match_b), 2 * len(pairs),
                     [r for pair in pairs for r in pair.replaced])
