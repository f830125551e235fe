"""3D semantic segmentation scenes for fine-tuning (ScanNet, S3DIS, the synthetic world; Pointcept layout).

One folder per scene: ``coord.npy`` (N, 3) float metres (z up), ``color.npy`` (N, 3) uint8 or float 0-255, and
the labels in ``<class_set.segment_key>.npy`` (N,) int (``segment20`` for ScanNet, ``segment`` for S3DIS and the
synthetic world; -1 = ignore). Other files (``normal.npy``, ``instance.npy``, ...) are not read.

Voxel features and labels (the same in training and evaluation): the voxel's feature is the mean colour of its
points, RGB / 255 - 0.5 in [-0.5, 0.5] (the convention of PPKT pretraining); its label is the majority label of
its labelled points (ties: smallest class id; no labelled point: -1). Majority voting keeps the rare labelled
points of the limited-points protocol. ``point_to_voxel`` maps every original point to the voxel containing it
(its nearest voxel centre), -1 for points cut off by a training crop; evaluation predicts each point with it.
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ppkt.data.scene_augment import (SceneAugment, augment_colors, augment_points, check_ranges, crop_nearest,
                                     majority_label, precrop_nearest)
from ppkt.geometry.voxelize import voxelize
from ppkt.atomic import is_partial
from ppkt.errors import UserError


class SceneError(UserError):
    """A scene folder, split or class set that cannot be used; the message names the file or folder."""


# ------------------------------------------------------------------------------------------ class sets
@dataclass(frozen=True)
class ClassSet:
    """Class names (ids 0..C-1 in order), the label file's stem, and the stored value meaning 'ignore'."""

    name: str
    names: Tuple[str, ...]
    segment_key: str
    ignore_index: int = -1

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def map_labels(self, raw: np.ndarray, source: str = "labels") -> np.ndarray:
        """Stored labels (N,) -> int64 (N,): ids 0..C-1 kept, ignore_index and negatives -> -1; other ids: SceneError."""
        labels = np.asarray(raw).reshape(-1).astype(np.int64)
        ignore = (labels < 0) | (labels == self.ignore_index)
        bad = ~ignore & (labels >= self.num_classes)
        if bad.any():
            raise SceneError(f"{source} holds class id {int(labels[bad][0])}, but class set {self.name!r} has "
                             f"{self.num_classes} classes (0..{self.num_classes - 1}; ignore {self.ignore_index})")
        labels[ignore] = -1
        return labels


SCANNET20 = ClassSet("scannet20", (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter",
    "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture"), "segment20")
S3DIS13 = ClassSet("s3dis13", (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase", "board",
    "clutter"), "segment")
BUILTIN_CLASS_SETS: Dict[str, ClassSet] = {"scannet20": SCANNET20, "scannet": SCANNET20, "s3dis13": S3DIS13, "s3dis": S3DIS13}


def class_set_from_json(path: Union[str, Path]) -> ClassSet:
    """ClassSet from a ``classes.json`` (``{"names": [...], "ignore_index": ...}``; key ``segment`` unless it says)."""
    path = Path(path)
    if path.is_dir():
        path = path / "classes.json"
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise SceneError(f"class table {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise SceneError(f"class table {path} is not valid JSON: {err}") from None
    names = table.get("names") if isinstance(table, dict) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise SceneError(f"class table {path} needs a non-empty list of strings under 'names'")
    if "ids" in table and list(table["ids"]) != list(range(len(names))):
        raise SceneError(f"class table {path}: 'ids' must be 0..{len(names) - 1} in order, got {table['ids']}")
    return ClassSet(str(table.get("name", path.parent.name or "classes")), tuple(names),
                    str(table.get("segment_key", "segment")), int(table.get("ignore_index", -1)))


def get_class_set(name_or_path: Union[str, Path, ClassSet]) -> ClassSet:
    """A built-in set by name (scannet20 / scannet, s3dis13 / s3dis) or a classes.json (file or its folder)."""
    if isinstance(name_or_path, ClassSet):
        return name_or_path
    key = str(name_or_path).lower()
    if key in BUILTIN_CLASS_SETS:
        return BUILTIN_CLASS_SETS[key]
    path = Path(name_or_path)
    if path.is_file() or (path.is_dir() and (path / "classes.json").is_file()):
        return class_set_from_json(path)
    raise SceneError(f"unknown class set {str(name_or_path)!r}: use one of {sorted(BUILTIN_CLASS_SETS)} "
                     "or the path of a classes.json (or of the folder holding it)")


# ------------------------------------------------------------------------------------------ listing
_AREA = re.compile(r"^Area_(\d+)$")
_AREA_ROOM = re.compile(r"^Area_(\d+)_.+$")


def _is_scene(folder: Path) -> bool:
    return folder.is_dir() and (folder / "coord.npy").is_file() and not is_partial(folder)


def list_scenes(root: Union[str, Path], split: str, val_area: int = 5) -> List[Path]:
    """Scene folders of `split` under `root`, tried in this order:

    1. ``<root>/splits/<split>.txt`` (one scene name a line; the scene in ``<root>/scenes/``, ``<root>/`` or ``<root>/<split>/``);
    2. ``<root>/<split>/<scene>/`` (Pointcept ScanNet: train/, val/, test/), sorted;
    3. S3DIS: ``<root>/Area_N/<room>/`` or ``<root>/Area_N_<room>/``; val/test = Area `val_area`, train = the others.
    """
    root = Path(root)
    if not root.is_dir():
        raise SceneError(f"dataset root {root} is not a folder")
    split_file = root / "splits" / f"{split}.txt"
    if split_file.is_file():
        scenes = []
        for line in split_file.read_text().splitlines():
            name = line.split("#")[0].strip()
            if not name:
                continue
            tried = [root / "scenes" / name, root / name, root / split / name]
            found = next((p for p in tried if p.is_dir()), None)
            if found is None:
                raise SceneError(f"{split_file} lists scene {name!r}, but none of {[str(p) for p in tried]} is a folder")
            scenes.append(found)
        if not scenes:
            raise SceneError(f"split file {split_file} lists no scene")
        return scenes
    split_dir = root / split
    if split_dir.is_dir():
        scenes = sorted(p for p in split_dir.iterdir() if _is_scene(p))
        if scenes:
            return scenes
    areas: List[Tuple[int, Path]] = []
    for p in sorted(root.iterdir()):
        if not p.is_dir():
            continue
        if _AREA.match(p.name):
            areas += [(int(_AREA.match(p.name).group(1)), q) for q in sorted(p.iterdir()) if _is_scene(q)]
        elif _AREA_ROOM.match(p.name) and _is_scene(p):
            areas.append((int(_AREA_ROOM.match(p.name).group(1)), p))
    if areas:
        if split in ("val", "test"):
            scenes = [p for a, p in areas if a == val_area]
        elif split == "train":
            scenes = [p for a, p in areas if a != val_area]
        else:
            raise SceneError(f"{root} has the S3DIS Area layout; split must be train, val or test, got {split!r}")
        if not scenes:
            raise SceneError(f"{root}: no S3DIS room for split {split!r} (validation area {val_area})")
        return scenes
    raise SceneError(f"no scenes for split {split!r} under {root}: looked for {split_file}, scene folders "
                     f"{split_dir}/<scene>/coord.npy, and S3DIS folders {root}/Area_N/<room>/ or {root}/Area_N_<room>/")


# ------------------------------------------------------------------------------------------ limited labels
def selection_count(n: int, fraction: float) -> int:
    """Scenes kept of n at `fraction` in (0, 1]: max(1, round(fraction * n))."""
    if not 0 < fraction <= 1:
        raise ValueError(f"select_scenes: fraction must be in (0, 1], got {fraction}")
    return max(1, round(fraction * n))


def seeded_order(n: int, seed: int) -> List[int]:
    """The permutation of range(n) fixed by `seed` (the random selection keeps its first scenes)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()


def select_scenes(scenes: Sequence, fraction: float, seed: int) -> list:
    """Keep max(1, round(fraction * n)) scenes, chosen by a permutation seeded by `seed`, in their input order.

    With one seed the selections are nested: every scene kept at 5% is also kept at 10%.
    """
    scenes = list(scenes)
    if not scenes:
        raise SceneError("select_scenes: no scenes to select from")
    count = selection_count(len(scenes), fraction)
    return [scenes[i] for i in sorted(seeded_order(len(scenes), seed)[:count])]


def scene_classes(folder: Union[str, Path], classes: ClassSet) -> FrozenSet[int]:
    """Class ids (0..C-1) labelled in a scene folder; reads its label file only (SceneError naming it on a problem)."""
    path = Path(folder) / f"{classes.segment_key}.npy"
    stored = np.unique(np.asarray(load_array(path, mmap=True)))  # the distinct stored values, then mapped and checked
    return frozenset(int(c) for c in classes.map_labels(stored, str(path)) if c >= 0)


def cover_order(held: Sequence[Collection[int]], order: Sequence[int]) -> List[int]:
    """The indices of `held` (the class ids of each scene) in the order: greedy set cover first, then the rest in
    `order` (a permutation of range(len(held))).

    Each greedy step takes the scene holding most classes not yet covered (ties: earliest in `order`) until no
    scene adds a class; the first k indices are greedy's cover with k scenes, so selections are nested.
    """
    held = [frozenset(h) for h in held]
    left, covered, picked = list(order), set(), []
    while left:
        gains = [len(held[i] - covered) for i in left]
        best = max(range(len(left)), key=lambda k: (gains[k], -k))
        if gains[best] == 0:
            break
        covered |= held[left[best]]
        picked.append(left.pop(best))
    return picked + left


def select_scenes_stratified(scenes: Sequence, fraction: float, seed: int, held: Sequence[Collection[int]]) -> list:
    """Keep as many scenes as `select_scenes`, the first of `cover_order` in the order `seeded_order(n, seed)`:
    every class held by some scene is held by a kept one when the greedy cover fits in the count (else as many
    classes as greedy covers with it); input order kept.

    held[i]: the class ids of scenes[i] (`scene_classes`). Same seed, same selection; nested across fractions.
    """
    scenes = list(scenes)
    if not scenes:
        raise SceneError("select_scenes: no scenes to select from")
    if len(held) != len(scenes):
        raise ValueError(f"select_scenes_stratified: {len(held)} class sets for {len(scenes)} scenes")
    count = selection_count(len(scenes), fraction)
    return [scenes[i] for i in sorted(cover_order(held, seeded_order(len(scenes), seed))[:count])]


def scene_seed(seed: int, name: str) -> int:
    """A seed fixed by (seed, scene name): the same in every epoch, process and run."""
    return (int(seed) * 1_000_003 + zlib.crc32(str(name).encode())) % (2**63 - 1)


def limit_points(segment, n_points: int, seed: int):
    """Keep n_points labelled points (label >= 0) of segment (N,), chosen by `seed`; the others become -1.

    Returns a new array / tensor of the input's kind and dtype; all labelled points stay when there are fewer.
    """
    if n_points < 0:
        raise ValueError(f"limit_points: n_points must be >= 0, got {n_points}")
    as_numpy = not isinstance(segment, Tensor)
    seg = torch.from_numpy(np.array(segment, copy=True)) if as_numpy else segment.clone()
    labelled = torch.nonzero(seg >= 0).flatten()
    if labelled.numel() > n_points:
        drop = torch.randperm(labelled.numel(), generator=torch.Generator().manual_seed(int(seed)))[n_points:]
        seg[labelled[drop]] = -1
    return seg.numpy() if as_numpy else seg


# ------------------------------------------------------------------------------------------ loading
@dataclass
class SceneArrays:
    coord: np.ndarray  # (N, 3) float32 metres
    color: np.ndarray  # (N, 3) float32 0-255
    segment: np.ndarray  # (N,) int64, -1 ignore


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """A .npy file (no pickles), or a SceneError naming it when missing or unreadable."""
    if not path.is_file():
        raise SceneError(f"scene file {path} is missing")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file becomes one clear error
        raise SceneError(f"cannot read {path}: {err}") from None


def check_scene(folder: Path, classes: ClassSet, labels: bool = False) -> int:
    """Point count N of a scene folder, from the array headers only (and, with `labels`, its label values against the
    class set, read memory-mapped); SceneError naming the file on a problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneError(f"scene folder {folder} does not exist")
    files = {"coord": 3, "color": 3, classes.segment_key: 1}
    n = None
    for stem, width in files.items():
        path = folder / f"{stem}.npy"
        arr = load_array(path, mmap=True)
        if arr.ndim == 0 or (width == 3 and (arr.ndim != 2 or arr.shape[1] != 3)) or (width == 1 and arr.size != arr.shape[0]):
            want = "(N, 3)" if width == 3 else "(N,)"
            raise SceneError(f"{path} has shape {tuple(arr.shape)}, expected {want}")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise SceneError(f"{path} has {arr.shape[0]} rows but {folder / 'coord.npy'} has {n} points")
    if n == 0:
        raise SceneError(f"{folder / 'coord.npy'} holds no point")
    if labels:
        seg_path = folder / f"{classes.segment_key}.npy"
        classes.map_labels(np.asarray(load_array(seg_path, mmap=True)), str(seg_path))
    return n


def load_scene(folder: Union[str, Path], classes: ClassSet) -> SceneArrays:
    """Read and check one scene folder (see the module docstring for the files)."""
    folder = Path(folder)
    check_scene(folder, classes)
    coord = load_array(folder / "coord.npy").astype(np.float32)
    color = load_array(folder / "color.npy").astype(np.float32)
    seg_path = folder / f"{classes.segment_key}.npy"
    segment = classes.map_labels(load_array(seg_path), str(seg_path))
    if not np.isfinite(coord).all():
        raise SceneError(f"{folder / 'coord.npy'} holds NaN or infinite coordinates")
    return SceneArrays(coord, np.clip(color, 0.0, 255.0), segment)


# ------------------------------------------------------------------------------------------ dataset
def grid_sample(coord: Tensor, color: Tensor, labels: Tensor, cell: float, num_classes: int) -> Tuple[Tensor, Tensor, Tensor]:
    """One point per occupied cell of `cell` metres: the mean position and colour of its points and their majority
    label (-1 if none is labelled) -> (coord (M, 3), color (M, 3), labels (M,)).

    Training clouds are sampled at half the training voxel size: a voxel then still holds about 4 (surface) points
    after any rotation, so the training voxels are those of the full cloud up to the points at voxel borders,
    while augmentation and voxelisation work on 5-10x fewer points (ScanNet-like 2 cm clouds at 5 cm voxels).
    """
    vox = voxelize(coord, cell)
    return (vox.mean(coord.double()).to(coord.dtype), vox.mean(color),
            majority_label(vox.point_to_voxel, labels, vox.num_voxels, num_classes))


@dataclass
class SceneSample:
    coords: Tensor  # (M, 3) int32 voxel indices, minimum 0
    feats: Tensor  # (M, 3) float32 mean RGB / 255 - 0.5, in [-0.5, 0.5]
    labels: Tensor  # (M,) int64 majority label, -1 ignore
    point_to_voxel: Tensor  # (N,) int64 voxel of each original point, -1 if cropped away
    point_labels: Tensor  # (N,) int64 label of each original point (after limit_points), -1 ignore
    name: str


PRECROP_MARGIN = 1.5  # training crops: points kept before augmentation, in voxels' worth per max_voxels


class SegScenes(Dataset):
    """Voxelised scenes for semantic segmentation; item key (index, seed) -> SceneSample (a bare int: seed = self.seed).

    train=True: the scene grid-sampled at half the voxel size (`grid_sample`, computed once per process), augmented
    (when `augment`, True = SceneAugment() defaults, or a SceneAugment) with a torch.Generator seeded by the key's
    seed, voxelised, then cropped to the `max_voxels` voxels nearest a random voxel (only PRECROP_MARGIN x that many
    voxels' worth of points nearest the centre are augmented: `precrop_nearest`); the sample's point_to_voxel and
    point_labels are those of the grid-sampled points kept by the pre-crop. train=False: the original points, no augmentation, no crop,
    deterministic. `limited_points` keeps that many labelled points per
    scene (fixed per scene name and `seed`); `labelled_points` ({scene name: point indices}, from the file
    `labelled_points_file`) keeps those points' labels only. The scene folders are checked (headers only) when built.
    """

    def __init__(self, scenes: Sequence[Union[str, Path]], classes: Union[ClassSet, str], voxel_size: float = 0.02,
                 train: bool = True, augment: Union[bool, SceneAugment] = True, max_voxels: Optional[int] = None,
                 limited_points: Optional[int] = None, seed: int = 0,
                 labelled_points: Optional[Dict[str, np.ndarray]] = None, labelled_points_file: str = "",
                 features: str = "color", color_dropout: float = 0.0):
        self.scenes = [Path(s) for s in scenes]
        if not self.scenes:
            raise SceneError("SegScenes: empty scene list")
        if not voxel_size > 0:
            raise ValueError(f"SegScenes: voxel_size must be > 0 metres, got {voxel_size}")
        if max_voxels is not None and max_voxels < 1:
            raise ValueError(f"SegScenes: max_voxels must be >= 1 or None, got {max_voxels}")
        if limited_points is not None and limited_points < 0:
            raise ValueError(f"SegScenes: limited_points must be >= 0 or None, got {limited_points}")
        self.classes = get_class_set(classes)
        self.voxel_size, self.train, self.max_voxels = float(voxel_size), bool(train), max_voxels
        self.limited_points, self.seed = limited_points, int(seed)
        # {scene name: labelled point indices} (a Limited Annotations file): a scene it does not name has no label
        self.labelled_points, self.labelled_points_file = labelled_points, labelled_points_file
        from ppkt.data.features import in_channels

        in_channels(features)  # a known name
        if not 0 <= color_dropout <= 1:
            raise ValueError(f"SegScenes: color_dropout must be in [0, 1], got {color_dropout}")
        self.features, self.color_dropout = features, float(color_dropout)
        if isinstance(augment, SceneAugment):
            self.augment: Optional[SceneAugment] = augment
        else:
            self.augment = SceneAugment() if augment else None
        if self.augment is not None:
            check_ranges(self.augment)
        for scene in self.scenes:  # every scene and its labels now, before a run makes its folder
            check_scene(scene, self.classes, labels=True)
        self._train_clouds: Dict[int, Tuple[Tensor, Tensor, Tensor]] = {}
        self._points_per_voxel: Dict[int, float] = {}  # of each training cloud, unaugmented

    def __len__(self) -> int:
        return len(self.scenes)

    def _points(self, index: int) -> Tuple[Tensor, Tensor, Tensor]:
        """(coord (N, 3), color (N, 3) 0-255, labels (N,) after limit_points) of scene `index`: the original points
        for evaluation; for training, the scene grid-sampled at half the voxel size (kept in memory per process)."""
        if index in self._train_clouds:
            return self._train_clouds[index]
        folder = self.scenes[index]
        scene = load_scene(folder, self.classes)
        segment = scene.segment
        if self.limited_points is not None:
            segment = limit_points(segment, self.limited_points, scene_seed(self.seed, folder.name))
        if self.labelled_points is not None:
            from ppkt.data.few_labels import keep_points

            segment = keep_points(segment, self.labelled_points.get(folder.name, np.zeros(0, np.int64)), folder.name,
                                  self.labelled_points_file)
        cloud = torch.from_numpy(scene.coord), torch.from_numpy(scene.color), torch.from_numpy(segment).long()
        if self.train:
            cloud = grid_sample(*cloud, self.voxel_size / 2, self.classes.num_classes)
            self._train_clouds[index] = cloud
            self._points_per_voxel[index] = cloud[0].shape[0] / max(1, voxelize(cloud[0], self.voxel_size).num_voxels)
        return cloud

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> SceneSample:
        index, seed = (key, self.seed) if isinstance(key, (int, np.integer)) else key
        folder = self.scenes[int(index)]
        points, colors, point_labels = self._points(int(index))
        generator = torch.Generator().manual_seed(int(seed))
        centre = None  # the crop's centre voxel: a random one, or that of the pre-crop's centre point
        if self.train and self.max_voxels is not None:
            # augment only a margin around the crop (`precrop_nearest`): PRECROP_MARGIN x max_voxels voxels' worth
            # of the points nearest a random point
            count = int(PRECROP_MARGIN * self.max_voxels * self._points_per_voxel[int(index)])
            if points.shape[0] > count:
                near = precrop_nearest(points, count, generator)
                points, colors, point_labels, centre = points[near], colors[near], point_labels[near], 0
        if self.train and self.augment is not None:
            points, _ = augment_points(points, self.augment, generator)
        vox = voxelize(points, self.voxel_size)
        coords, point_to_voxel = vox.coords, vox.point_to_voxel
        feats = vox.mean(colors)
        labels = majority_label(point_to_voxel, point_labels, vox.num_voxels, self.classes.num_classes)
        if self.train and self.max_voxels is not None and vox.num_voxels > self.max_voxels:
            keep, _ = crop_nearest(coords, self.max_voxels, generator,
                                   None if centre is None else int(point_to_voxel[centre]))
            remap = torch.full((vox.num_voxels,), -1, dtype=torch.long)
            remap[keep] = torch.arange(keep.numel())
            coords, feats, labels = coords[keep], feats[keep], labels[keep]
            coords = coords - coords.min(dim=0).values
            point_to_voxel = remap[point_to_voxel]
        if self.train and self.augment is not None:
            feats = augment_colors(feats, self.augment, generator)
        feats = (feats / 255.0 - 0.5).float()
        if self.features != "color" or self.color_dropout:
            from ppkt.data.features import assemble

            dropped = self.train and self.color_dropout and float(torch.rand(1, generator=generator)) < self.color_dropout
            feats = assemble(self.features, None if dropped else feats, coords)
        return SceneSample(coords.int(), feats, labels, point_to_voxel, point_labels, folder.name)


# ------------------------------------------------------------------------------------------ batching
@dataclass
class SceneBatch:
    coords: Tensor  # (M, 4) int32 [batch, x, y, z]
    feats: Tensor  # (M, 3) float32
    labels: Tensor  # (M,) int64, -1 ignore
    batch_size: int
    offsets: Tensor  # (B + 1,) int64: voxels of sample b are rows offsets[b]:offsets[b + 1]
    point_to_voxel: List[Tensor] = field(default_factory=list)  # per sample (N_b,) int64, index within the sample
    point_labels: List[Tensor] = field(default_factory=list)  # per sample (N_b,) int64
    names: List[str] = field(default_factory=list)

    def to(self, device: Union[str, torch.device]) -> "SceneBatch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return SceneBatch(move(self.coords), move(self.feats), move(self.labels), self.batch_size, move(self.offsets),
                          [move(t) for t in self.point_to_voxel], [move(t) for t in self.point_labels], list(self.names))


def collate_scenes(items: Sequence[SceneSample]) -> SceneBatch:
    """Stack SceneSamples into one sparse batch (the batch index is coords[:, 0])."""
    items = list(items)
    if not items:
        raise ValueError("collate_scenes: empty batch")
    sizes = torch.tensor([s.coords.shape[0] for s in items], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(sizes, 0)])
    batch = torch.repeat_interleave(torch.arange(len(items), dtype=torch.int32), sizes)
    coords = torch.cat([batch[:, None], torch.cat([s.coords.int() for s in items])], dim=1)
    return SceneBatch(coords, torch.cat([s.feats for s in items]), torch.cat([s.labels for s in items]), len(items),
                      offsets, [s.point_to_voxel for s in items], [s.point_labels for s in items], [s.name for s in items])
