"""RGB-D frames -> training samples of paired pixels and voxels.

One sample is one frame: 2D augmentation (resize, flip) of image, depth and intrinsics together,
back-projection (into the camera frame, or with the pose into the z-up world frame: ``data.frame``),
3D augmentation (elastic, rotation about the up axis, scaling), voxelisation. Every voxel keeps one of
its pixels (chosen at random), so the teacher's feature at that pixel and the student's feature at that
voxel form a positive pair.

With a teacher cache (`ppkt.data.teacher_cache`, `teacher.cache`), each sample also carries the cached teacher
feature map of its augmented image, and PPKT skips the teacher; the cache is exact for the flip, and refuses a
random resize (augment.resize must be [1, 1]).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ppkt.config import AugmentConfig, ConfigError, DataConfig
from ppkt.data.frames import FrameError, RGBDFrame, find_frame_folders, frame_rgb, open_frame_folder
from ppkt.geometry.augment import UP_AXIS, ImageTransform, PointTransform, random_image_transform, random_point_transform
from ppkt.geometry.backproject import backproject
from ppkt.geometry.voxelize import voxelize

if TYPE_CHECKING:
    from ppkt.data.teacher_cache import TeacherCache


@dataclass
class PairSample:
    image: Tensor  # (3, H, W) float RGB in [0, 1], augmented
    coords: Tensor  # (M, 3) int32 voxel indices
    feats: Tensor  # (M, C) float: data.features of each voxel (colour: mean RGB of its points, centred -0.5 .. 0.5)
    pixel: Tensor  # (M,) int64: flat index v * W + u of the pixel paired with each voxel
    source: str
    origin: Tensor  # (3,) metres of voxel index 0, in the augmented 3D frame
    image_transform: ImageTransform  # the 2D augmentation drawn for this sample
    point_transform: PointTransform  # the 3D augmentation drawn for this sample
    replaced: List[Tuple[str, str]] = field(default_factory=list)  # (frame, reason) of unusable frames passed over
    teacher_features: Optional[Tensor] = None  # (C, h, w) float16 cached teacher features of `image`, or None
    points: Optional[Tensor] = None  # (M, 3) metres: each voxel's paired point before the 3D augmentation (data.frame)


def make_sample(frame: RGBDFrame, data: DataConfig, aug: AugmentConfig, generator: torch.Generator) -> PairSample:
    """Augment, back-project and voxelise one frame; FrameError if no valid point remains."""
    image = frame_rgb(frame)
    depth = torch.from_numpy(frame.depth)
    K = torch.from_numpy(frame.intrinsics).float()
    on = aug.enabled
    t2d = random_image_transform(depth.shape, data.image_size, aug.resize if on else (1.0, 1.0), aug.flip if on else 0.0, generator)
    image, depth, K = t2d.bilinear(image), t2d.nearest(depth), t2d.intrinsics(K)
    pose = None
    if data.frame == "world":
        if frame.pose is None:
            raise FrameError(f"{frame.source}: no camera pose, but data.frame=world needs one (use data.frame=camera)")
        pose = torch.from_numpy(frame.pose).float()
        if t2d.flip:  # the flipped K back-projects x mirrored: undo it, so points are the true (z-up) world points
            pose = pose @ torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    bp = backproject(depth, K, features=image.permute(1, 2, 0), pose=pose)
    if bp.points.shape[0] == 0:
        raise FrameError(f"{frame.source}: no valid depth pixel left after resizing/cropping")
    t3d = (random_point_transform(bp.points, aug.rotation, aug.scale, aug.elastic, generator, UP_AXIS[data.frame])
           if on else PointTransform())
    vox = voxelize(t3d(bp.points), data.voxel_size)
    rep = vox.representatives(generator)
    feats = vox.mean(bp.features) - 0.5
    if data.features != "color" or (on and aug.color_dropout):
        from ppkt.data.features import assemble

        dropped = on and aug.color_dropout and float(torch.rand(1, generator=generator)) < aug.color_dropout
        feats = assemble(data.features, None if dropped else feats, vox.coords)
    return PairSample(image, vox.coords, feats, bp.pixel_index[rep], frame.source, vox.origin, t2d,
                      t3d, points=bp.points[rep])


class PixelPointFrames(Dataset):
    """All frames below `data.roots`; item key = (frame index, sample seed) -> PairSample.

    teacher_cache: samples also carry their cached teacher features (TeacherCacheError here if the cache does not
    hold every frame at this image size and flip setting; the teacher itself is checked by the caller).
    """

    def __init__(self, data: DataConfig, aug: AugmentConfig, teacher_cache: Optional["TeacherCache"] = None):
        if not data.roots:
            raise FrameError("data.roots is empty: give the frame folders to pretrain on, e.g. data.roots=[data/7scenes-redkitchen]")
        if data.frame not in UP_AXIS:
            raise ConfigError(f"data.frame must be one of {sorted(UP_AXIS)}, got {data.frame!r}")
        self.data, self.aug = data, aug
        self.folders = [
            open_frame_folder(folder, layout=data.layout, depth_scale=data.depth_scale, max_depth=data.max_depth, stride=data.stride)
            for root in data.roots
            for folder in find_frame_folders(root)
        ]
        self.index: List[Tuple[int, int]] = [(f, i) for f, folder in enumerate(self.folders) for i in range(len(folder))]
        if not self.index:
            raise FrameError(f"no frames found under {list(data.roots)}")
        self.teacher_cache = teacher_cache
        if teacher_cache is not None:
            teacher_cache.check_data(data, aug)
            self.cache_rows = [teacher_cache.locate(folder) for folder in self.folders]  # (entry root, name -> row)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Tuple[int, int]) -> PairSample:
        """The sample of frame `index` drawn with `seed`; an unusable frame is replaced by the next usable one
        (index + 1, index + 2, ... with the same seed: the same replacement in every run, process and worker),
        and the frames passed over are listed in the sample's `replaced`. FrameError if no frame is usable."""
        index, seed = key
        replaced: List[Tuple[str, str]] = []
        for step in range(len(self.index)):
            folder, i = self.index[(index + step) % len(self.index)]
            try:
                sample = make_sample(self.folders[folder][i], self.data, self.aug, torch.Generator().manual_seed(seed))
                if self.teacher_cache is not None:
                    sample.teacher_features = self.teacher_cache.features(
                        *self.cache_rows[folder], self.folders[folder].names[i], sample.image_transform)
            except FrameError as err:
                replaced.append((f"{self.folders[folder].root} frame {self.folders[folder].names[i]}", str(err)))
                continue
            sample.replaced = replaced
            return sample
        raise FrameError(f"none of the {len(self.index)} frames under {list(self.data.roots)} is usable; the first: "
                         f"{replaced[0][1]}")


@dataclass
class PairBatch:
    images: Tensor  # (B, 3, H, W)
    coords: Tensor  # (M, 4) int32 [batch, x, y, z]
    feats: Tensor  # (M, 3)
    pixel: Tensor  # (M,) int64 flat pixel index within its image
    voxel_batch: Tensor  # (M,) int64 image of each voxel
    skipped: List[Tuple[str, str]]  # (frame, reason) of unusable frames replaced in this batch
    teacher_features: Optional[Tensor] = None  # (B, C, h, w) float16 cached teacher features, or None: run the teacher

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    def apply(self, fn: Callable[[Tensor], Tensor]) -> "PairBatch":
        """A copy with `fn` applied to every tensor field (the others kept)."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{name: fn(t) for name, t in tensors.items() if isinstance(t, Tensor)})

    def to(self, device: torch.device) -> "PairBatch":
        """On `device`; the copies are asynchronous (non_blocking) from pinned memory."""
        return self.apply(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> "PairBatch":
        """In page-locked memory (CUDA needed). DataLoader(pin_memory=True) calls it in its pinning thread: a batch
        without this method would stay in pageable memory and every `to(cuda)` copy would be synchronous."""
        return self.apply(Tensor.pin_memory)


def collate_pairs(samples: Sequence[PairSample]) -> PairBatch:
    """Stack samples: voxels of sample b follow those of sample b - 1, with batch index b in coords[:, 0];
    teacher features are stacked when the samples carry them (all or none)."""
    cached = [s.teacher_features is not None for s in samples]
    if any(cached) and not all(cached):
        raise ValueError("collate_pairs: some samples carry cached teacher features and some do not")
    voxel_batch = torch.cat([torch.full((s.coords.shape[0],), b, dtype=torch.long) for b, s in enumerate(samples)])
    coords = torch.cat([voxel_batch[:, None].int(), torch.cat([s.coords for s in samples])], dim=1)
    return PairBatch(
        images=torch.stack([s.image for s in samples]),
        coords=coords,
        feats=torch.cat([s.feats for s in samples]),
        pixel=torch.cat([s.pixel for s in samples]),
        voxel_batch=voxel_batch,
        skipped=[r for s in samples for r in s.replaced],
        teacher_features=torch.stack([s.teacher_features for s in samples]) if any(cached) else None,
    )
