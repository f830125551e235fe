"""Scenes with 3D boxes for detection: the segmentation scene folders (``coord.npy``, ``color.npy``) plus
``boxes.npy`` (K, 8) [cx, cy, cz, dx, dy, dz, heading, class] (metres, radians; see ppkt.detection.classes for the
class column), as `ppkt prepare scannet-scenes`, `ppkt prepare sunrgbd` and `ppkt synth` write them.

A sample is the scene voxelised at `voxel_size`: voxel features are the mean colour (RGB / 255 - 0.5, as in
segmentation) and each voxel keeps the mean position of its points in metres (`xyz`, where seeds and votes live).
Training samples are first augmented together with their boxes (ppkt.detection.augment.random_augment: flips,
rotation about z, scaling) by a generator seeded by the item's seed, so a run is reproducible and resumable.
For speed, training clouds are grid-sampled at half the voxel size once per process (as in segmentation), and with
`max_voxels` cropped to that many voxels nearest a random one; a box stays a training target when at least half of
its voxels survive the crop (`MIN_KEPT`), else it is dropped (its voxels remain, as background).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ppkt.data.scene_augment import crop_nearest
from ppkt.data.scenes import SceneError, grid_sample, load_array
from ppkt.detection.augment import random_augment
from ppkt.detection.classes import DetectionClasses, get_detection_classes
from ppkt.detection.loss import inside_boxes
from ppkt.geometry.voxelize import voxelize

MIN_KEPT = 0.5  # share of a box's voxels a training crop must keep for the box to stay a target


def load_boxes(folder: Path, classes: DetectionClasses) -> np.ndarray:
    """(K, 8) float32 boxes of a scene folder, column 7 the detection class index (other classes dropped)."""
    path = Path(folder) / "boxes.npy"
    return classes.map_boxes(load_array(path), str(path))


@dataclass
class DetSample:
    coords: Tensor  # (M, 3) int32 voxel indices
    feats: Tensor  # (M, 3) float32
    xyz: Tensor  # (M, 3) float32 metres, mean position of the voxel's points
    boxes: Tensor  # (K, 8) float32 [cx, cy, cz, dx, dy, dz, heading, class index]
    name: str


@dataclass
class DetBatch:
    coords: Tensor  # (M, 4) int32 [batch, x, y, z]
    feats: Tensor  # (M, 3)
    xyz: Tensor  # (M, 3) metres
    offsets: Tensor  # (B + 1,): voxels of sample b are rows offsets[b]:offsets[b + 1]
    boxes: List[Tensor]  # per sample (K_b, 8)
    names: List[str]

    @property
    def batch_size(self) -> int:
        return len(self.names)

    def to(self, device) -> "DetBatch":
        return DetBatch(self.coords.to(device), self.feats.to(device), self.xyz.to(device), self.offsets.to(device),
                        [b.to(device) for b in self.boxes], list(self.names))


class DetScenes(Dataset):
    """Scene folders -> DetSample; item key (index, seed) or a bare index (seed = self.seed). Every file is checked
    when the dataset is built (SceneError naming it)."""

    def __init__(self, scenes: Sequence[Union[str, Path]], classes: Union[str, DetectionClasses], voxel_size: float,
                 train: bool = True, augment: bool = True, max_voxels: Optional[int] = None, seed: int = 0,
                 rotation: float = np.pi / 6, scale: Sequence[float] = (0.85, 1.15), flip_y: bool = True,
                 features: str = "color", color_dropout: float = 0.0):
        self.scenes = [Path(s) for s in scenes]
        self.features, self.color_dropout = features, float(color_dropout)  # ppkt.data.features
        if not self.scenes:
            raise SceneError("DetScenes: empty scene list")
        if not voxel_size > 0:
            raise ValueError(f"DetScenes: voxel_size must be > 0 metres, got {voxel_size}")
        self.classes = get_detection_classes(classes)
        if max_voxels is not None and max_voxels < 1:
            raise ValueError(f"DetScenes: max_voxels must be >= 1 or None, got {max_voxels}")
        self.voxel_size, self.train, self.augment, self.seed = float(voxel_size), bool(train), bool(augment), int(seed)
        self.max_voxels, self.rotation, self.scale, self.flip_y = max_voxels, float(rotation), tuple(scale), bool(flip_y)
        self.truth = [load_boxes(s, self.classes) for s in self.scenes]  # also checks every boxes.npy now
        self._clouds: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.scenes)

    def cloud(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """(coord (N, 3) float32 metres, color (N, 3) float32 0-255) of scene `index` (kept in memory per process)."""
        if index not in self._clouds:
            folder = self.scenes[index]
            coord = load_array(folder / "coord.npy").astype(np.float32)
            color = load_array(folder / "color.npy").astype(np.float32)
            if coord.ndim != 2 or coord.shape[1] != 3 or color.shape != coord.shape or len(coord) == 0:
                raise SceneError(f"{folder}: coord.npy {coord.shape} and color.npy {color.shape} must both be (N, 3), N > 0")
            if not np.isfinite(coord).all():
                raise SceneError(f"{folder / 'coord.npy'} holds NaN or infinite coordinates")
            color = np.clip(color, 0, 255)
            if self.train:  # one point per half-voxel cell: the same training voxels from far fewer points
                c, rgb, _ = grid_sample(torch.from_numpy(coord), torch.from_numpy(color),
                                        torch.full((len(coord),), -1, dtype=torch.long), self.voxel_size / 2, 1)
                coord, color = c.numpy(), rgb.numpy()
            self._clouds[index] = coord, color
        return self._clouds[index]

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> DetSample:
        index, seed = (int(key), self.seed) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        points, colors = self.cloud(index)
        boxes = self.truth[index].astype(np.float64)
        if self.train and self.augment:
            points, moved = random_augment(points.astype(np.float64), boxes[:, :7], np.random.default_rng(seed),
                                           self.rotation, self.scale, self.flip_y)
            boxes = np.concatenate([moved, boxes[:, 7:]], axis=1)
        pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        vox = voxelize(pts, self.voxel_size)
        coords, feats = vox.coords, (vox.mean(torch.from_numpy(colors)) / 255.0 - 0.5).float()
        if self.features != "color" or (self.train and self.color_dropout):
            from ppkt.data.features import assemble

            dropped = self.train and float(np.random.default_rng((seed, 1)).random()) < self.color_dropout
            feats = assemble(self.features, None if dropped else feats, coords)
        xyz, target = vox.mean(pts.double()).float(), torch.from_numpy(boxes).float()
        if self.train and self.max_voxels is not None and vox.num_voxels > self.max_voxels:
            keep, _ = crop_nearest(coords, self.max_voxels, torch.Generator().manual_seed(seed))
            inside = inside_boxes(xyz, target)  # (M, K)
            kept = inside[keep].sum(0) >= MIN_KEPT * inside.sum(0).clamp_min(1)
            coords, feats, xyz, target = coords[keep], feats[keep], xyz[keep], target[kept & (inside.sum(0) > 0)]
            coords = coords - coords.min(dim=0).values
        return DetSample(coords.int(), feats, xyz, target, self.scenes[index].name)


def collate_detection(items: Sequence[DetSample]) -> DetBatch:
    items = list(items)
    sizes = torch.tensor([s.coords.shape[0] for s in items], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(sizes, 0)])
    batch = torch.repeat_interleave(torch.arange(len(items), dtype=torch.int32), sizes)
    return DetBatch(torch.cat([batch[:, None], torch.cat([s.coords for s in items])], 1), torch.cat([s.feats for s in items]),
                    torch.cat([s.xyz for s in items]), offsets, [s.boxes for s in items], [s.name for s in items])
