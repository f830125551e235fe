"""The labelled 2D segmentation dataset: `SegFrames` (color + label of a split's frames) and its readers.

Dataset layout (written by the synthetic world)::

    DATA/classes.json              {"names": [...], "ignore_index": 255, ...}
    DATA/splits/train.txt, val.txt scene names, one per line ("#" starts a comment)
    DATA/frames/<scene>/           ScanNet exported frames: color/<i>.jpg, depth/<i>.png, intrinsic/, pose/<i>.txt
    DATA/frames/<scene>/label/<i>.png   8-bit class id per pixel of color/<i>.jpg, ignore_index = not labelled

Images are the color files as stored (labels are registered to them), RGB in [0, 1].
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ppkt.data.frames import FrameError, open_frame_folder, read_color
from ppkt.imagenet import IMAGENET_MEAN
# Training-crop defaults of `SegFrames`, also those of `ppkt.train.teacher2d.train_teacher2d` (see its docstring).
from ppkt.teacher2d_defaults import DEFAULT_IMAGE_SIZE, DEFAULT_SCALE_RANGE

__all__ = ["Teacher2DDataError", "SegFrames", "read_classes", "read_split", "read_label",
           "DEFAULT_IMAGE_SIZE", "DEFAULT_SCALE_RANGE"]

_COLOR_EXTS = (".jpg", ".jpeg", ".png")


class Teacher2DDataError(FrameError):
    """The 2D segmentation dataset is missing a file or holds a bad one; the message names the file."""


def read_classes(data_root: str | os.PathLike) -> Tuple[List[str], int]:
    """(class names, ignore index) from DATA/classes.json."""
    path = Path(data_root) / "classes.json"
    if not path.is_file():
        raise Teacher2DDataError(f"{path}: classes file not found (expected {{\"names\": [...], \"ignore_index\": 255}})")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise Teacher2DDataError(f"{path}: not valid JSON ({err})") from None
    names = info.get("names") if isinstance(info, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise Teacher2DDataError(f"{path}: 'names' must be a non-empty list of class names")
    # label images are 8-bit: "ignore_label" is their ignore value; "ignore_index" may be the 3D one (-1)
    key = "ignore_label" if "ignore_label" in info else "ignore_index"
    ignore = info.get(key, 255)
    if not isinstance(ignore, int) or not 0 <= ignore <= 255 or ignore < len(names):
        raise Teacher2DDataError(f"{path}: {key!r} (ignore value of the 8-bit label images) must be an integer in [{len(names)}, 255], got {ignore!r}")
    if len(names) > 255:
        raise Teacher2DDataError(f"{path}: {len(names)} classes do not fit 8-bit labels")
    return names, ignore


def read_split(data_root: str | os.PathLike, split: str) -> List[str]:
    """Scene names listed in DATA/splits/<split>.txt (blank lines and # comments skipped)."""
    path = Path(data_root) / "splits" / f"{split}.txt"
    if not path.is_file():
        raise Teacher2DDataError(f"{path}: split file not found (expected one scene name per line)")
    scenes = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    scenes = [s for s in scenes if s]
    if not scenes:
        raise Teacher2DDataError(f"{path}: split '{split}' lists no scenes")
    return scenes


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit single-channel label PNG as (H, W) uint8 class ids."""
    path = Path(path)
    if not path.is_file():
        raise Teacher2DDataError(f"{path}: label file not found")
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise Teacher2DDataError(f"{path}: unreadable or corrupt label image ({err})") from None
    if img.mode not in ("L", "P"):
        raise Teacher2DDataError(f"{path}: labels must be an 8-bit single-channel PNG (mode L or P), got mode {img.mode!r}")
    return np.array(img, dtype=np.uint8)


@dataclass
class _Item:
    color: Path
    label: Path


class SegFrames(Dataset):
    """Color + label of every frame of a split's scenes.

    Items are `index` or `(index, seed)` (the seed drives this sample's augmentation, see IterationBatchSampler).
    augment=True (training): random scale in scale_range x base, random horizontal flip, random crop to
    image_size (H, W), padding with the ImageNet mean and ignore_index where the scaled image is smaller.
    augment=False (evaluation): the image resized by the base factor only, and the label at full resolution.
    base = max(H_train / H, W_train / W): the frame resized to cover the training size (1 if image_size is None,
    allowed for evaluation only).
    Returns (image float32 (3, h, w) in [0, 1], label int64 (h', w')).
    """

    def __init__(self, data_root: str | os.PathLike, split: str = "train",
                 image_size: Optional[Sequence[int]] = DEFAULT_IMAGE_SIZE,
                 augment: bool = True, scale_range: Sequence[float] = DEFAULT_SCALE_RANGE, flip: float = 0.5):
        self.root = Path(data_root)
        if not self.root.is_dir():
            raise Teacher2DDataError(f"{self.root}: dataset root is not a directory")
        self.class_names, self.ignore_index = read_classes(self.root)
        self.num_classes = len(self.class_names)
        self.split, self.scenes = split, read_split(self.root, split)
        if image_size is None and augment:
            raise ValueError("image_size (H, W) is needed for training crops")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        if self.image_size is not None and min(self.image_size) < 8:
            raise ValueError(f"image_size must be at least 8 x 8 pixels, got {self.image_size}")
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        self.augment, self.flip = augment, float(flip)
        self.items: List[_Item] = []
        for scene in self.scenes:
            folder = self.root / "frames" / scene
            if not folder.is_dir():
                raise Teacher2DDataError(f"{folder}: scene '{scene}' of {self.root / 'splits' / (split + '.txt')} not found")
            frames = open_frame_folder(folder, layout="scannet")
            for name in frames.names:
                color = next((folder / "color" / f"{name}{ext}" for ext in _COLOR_EXTS
                              if (folder / "color" / f"{name}{ext}").is_file()), None)
                if color is None:
                    raise Teacher2DDataError(f"{folder / 'color' / (name + '.jpg')}: color file missing for frame {name}")
                label = folder / "label" / f"{name}.png"
                if not label.is_file():
                    raise Teacher2DDataError(
                        f"{label}: label file missing for frame {name} (expected an 8-bit PNG of class ids, "
                        f"{self.ignore_index} = ignore)")
                self.items.append(_Item(color, label))
        self._pad = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """(color (H, W, 3) uint8, label (H, W) uint8) of item i, checked."""
        item = self.items[i]
        color = read_color(item.color)
        label = read_label(item.label)
        if color.shape[:2] != label.shape:
            raise Teacher2DDataError(f"{item.label}: label size {label.shape[1]}x{label.shape[0]} differs from the color "
                                     f"size {color.shape[1]}x{color.shape[0]} of {item.color}")
        bad = np.unique(label[(label >= self.num_classes) & (label != self.ignore_index)])
        if bad.size:
            raise Teacher2DDataError(f"{item.label}: label values {bad[:8].tolist()} are not class ids 0..{self.num_classes - 1} "
                                     f"nor the ignore index {self.ignore_index} ({self.root / 'classes.json'})")
        return color, label

    def base_scale(self, hw: Tuple[int, int]) -> float:
        if self.image_size is None:
            return 1.0
        return max(self.image_size[0] / hw[0], self.image_size[1] / hw[1])

    def __getitem__(self, key) -> Tuple[Tensor, Tensor]:
        i, seed = key if isinstance(key, tuple) else (key, _default_seed(key))
        color, label = self.load(i)
        if not self.augment:
            s = self.base_scale(label.shape)
            if abs(s - 1.0) > 1e-9:
                color = _resize(color, s, Image.BILINEAR)
            return _to_tensor(color), torch.from_numpy(label.astype(np.int64))
        rng = np.random.default_rng(seed)
        s = self.base_scale(label.shape) * rng.uniform(*self.scale_range)
        color, label = _resize(color, s, Image.BILINEAR), _resize(label, s, Image.NEAREST)
        if rng.random() < self.flip:
            color, label = color[:, ::-1], label[:, ::-1]
        th, tw = self.image_size
        h, w = label.shape
        ph, pw = max(th, h), max(tw, w)
        if (ph, pw) != (h, w):
            c = np.empty((ph, pw, 3), np.uint8)
            c[:] = self._pad
            lab = np.full((ph, pw), self.ignore_index, np.uint8)
            y, x = (ph - h) // 2, (pw - w) // 2  # scaled-down frame centred in the crop
            c[y:y + h, x:x + w], lab[y:y + h, x:x + w] = color, label
            color, label = c, lab
        y0, x0 = int(rng.integers(0, ph - th + 1)), int(rng.integers(0, pw - tw + 1))
        color, label = color[y0:y0 + th, x0:x0 + tw], label[y0:y0 + th, x0:x0 + tw]
        return _to_tensor(color), torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))


def _default_seed(i: int) -> int:
    return 1_000_003 * (i + 1)


def _resize(a: np.ndarray, s: float, resample) -> np.ndarray:
    h, w = a.shape[:2]
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    if size == (w, h):
        return a
    return np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize(size, resample))


def _to_tensor(color: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(color).transpose(2, 0, 1).astype(np.float32) / 255.0)
