"""A 2D segmentation teacher trained on rendered 2D labels (`ppkt teacher train` / `ppkt teacher eval`).

2D labels are cheap, 3D labels are not: a ResNet-FCN (as in the paper's Table 5, there trained on ADE20k) is
trained for semantic segmentation on rendered frames, and its backbone is then the frozen PPKT teacher:

    ppkt teacher train --data DATA --out runs/teacher2d.pt
    ppkt teacher eval --checkpoint runs/teacher2d.pt --data DATA
    # pretraining config: teacher.arch=resnet18 teacher.weights=runs/teacher2d.pt

Dataset layout (written by the synthetic world)::

    DATA/classes.json              {"names": [...], "ignore_index": 255, ...}
    DATA/splits/train.txt, val.txt scene names, one per line ("#" starts a comment)
    DATA/frames/<scene>/           ScanNet exported frames: color/<i>.jpg, depth/<i>.png, intrinsic/, pose/<i>.txt
    DATA/frames/<scene>/label/<i>.png   8-bit class id per pixel of color/<i>.jpg, ignore_index = not labelled

The network sees the color image as stored (labels are registered to it), RGB in [0, 1] normalised with the
ImageNet mean / std inside the model, exactly as `ppkt.models.teacher.Teacher2D` normalises ResNet input.

The checkpoint ``{"format": "ppkt-teacher2d", "version": 1, "arch", "backbone", "head", ...}`` is read by
`build_teacher(arch, weights=<file>)` (backbone only) and by `load_seg_teacher` (backbone + head).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ppkt.data.frames import FrameError, open_frame_folder, read_color
from ppkt.models.teacher import IMAGENET_MEAN, IMAGENET_STD, TEACHER_CKPT_FORMAT, build_teacher
from ppkt.train.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_atomic
from ppkt.train.logging import read_metrics
from ppkt.train.sampler import IterationBatchSampler

__all__ = [
    "SEG_ARCHS",
    "SEG_TEACHER_VERSION",
    "Teacher2DDataError",
    "SegTeacher",
    "FCNHead",
    "SegFrames",
    "read_classes",
    "read_split",
    "read_label",
    "confusion_matrix",
    "segmentation_metrics",
    "train_teacher2d",
    "evaluate_teacher2d",
    "load_seg_teacher",
    "format_iou_table",
    "add_teacher_commands",
]

SEG_ARCHS: Tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
SEG_TEACHER_VERSION = 1
_EXPANSION = {"resnet18": 1, "resnet34": 1, "resnet50": 4}
_STAGES = ("layer1", "layer2", "layer3", "layer4")
_COLOR_EXTS = (".jpg", ".jpeg", ".png")

# Defaults of `train_teacher2d` (see its docstring for why).
DEFAULT_ITERATIONS = 800
DEFAULT_BATCH_SIZE = 8
DEFAULT_LR = 1e-3
DEFAULT_IMAGE_SIZE = (240, 320)
DEFAULT_SCALE_RANGE = (0.75, 1.5)


class Teacher2DDataError(FrameError):
    """The 2D segmentation dataset is missing a file or holds a bad one; the message names the file."""


# ----------------------------------------------------------------------------------------------------- model
class FCNHead(nn.Module):
    """FCN / DeepLab-lite decoder: layer2 + up(layer3) + up(layer4) after 1x1 convs, 3x3 conv-BN-ReLU, classifier.

    Works at stride 8 (layer2's resolution); `SegTeacher` upsamples the logits bilinearly to the input size.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, mid_channels: int = 128, dropout: float = 0.1):
        super().__init__()
        c2, c3, c4 = in_channels
        self.lateral2 = nn.Conv2d(c2, mid_channels, 1)
        self.lateral3 = nn.Conv2d(c3, mid_channels, 1)
        self.lateral4 = nn.Conv2d(c4, mid_channels, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)

    def forward(self, f2: Tensor, f3: Tensor, f4: Tensor) -> Tensor:
        size = f2.shape[-2:]
        x = self.lateral2(f2)
        x = x + F.interpolate(self.lateral3(f3), size=size, mode="bilinear", align_corners=False)
        x = x + F.interpolate(self.lateral4(f4), size=size, mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(x))


class SegTeacher(nn.Module):
    """ResNet-FCN for semantic segmentation: (B, 3, H, W) RGB in [0, 1] -> logits (B, num_classes, H, W).

    `backbone` is a torchvision ResNet whose `fc` is an Identity: its state dict has exactly torchvision's key
    names without `fc.*`, so it loads into `build_teacher(arch, weights=<checkpoint>)`.
    backbone_weights: "none" (random init), "imagenet" (torch hub cache file, never downloaded) or a checkpoint
    path, read exactly as `build_teacher` reads teacher weights.
    """

    def __init__(self, arch: str = "resnet18", num_classes: int = 2, backbone_weights: str = "none",
                 mid_channels: int = 128):
        super().__init__()
        arch = arch.lower().replace("-", "_")
        if arch not in SEG_ARCHS:
            raise ValueError(f"Unknown segmentation teacher arch '{arch}'; choose one of {SEG_ARCHS}.")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch, self.num_classes = arch, int(num_classes)
        net = getattr(torchvision.models, arch)(weights=None)
        net.fc = nn.Identity()  # no fc.* keys in the state dict
        self.backbone = net
        self.backbone_weights = str(backbone_weights)
        if self.backbone_weights != "none":
            teacher = build_teacher(arch, self.backbone_weights, stage="layer4")  # same loading (and errors)
            self.backbone.load_state_dict(teacher.body.state_dict())
        e = _EXPANSION[arch]
        self.head = FCNHead((128 * e, 256 * e, 512 * e), self.num_classes, mid_channels)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        # Set by load_seg_teacher / train_teacher2d; used by evaluation.
        self.class_names: List[str] = [str(i) for i in range(self.num_classes)]
        self.ignore_index = 255
        self.train_image_size: Optional[Tuple[int, int]] = None

    def normalize(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"SegTeacher expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return (images.to(self.mean.dtype) - self.mean) / self.std

    def encode(self, images: Tensor) -> Dict[str, Tensor]:
        """Backbone features {"layer1": stride 4, ..., "layer4": stride 32} of RGB images in [0, 1]."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(self.normalize(images)))))
        feats = {}
        for name in _STAGES:
            x = getattr(b, name)(x)
            feats[name] = x
        return feats

    def forward(self, images: Tensor) -> Tensor:
        feats = self.encode(images)
        logits = self.head(feats["layer2"], feats["layer3"], feats["layer4"])
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, H, W) int64 class ids (call .eval() first)."""
        return self(images).argmax(1)


# ------------------------------------------------------------------------------------------------------ data
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
    ignore = info.get("ignore_index", 255)
    if not isinstance(ignore, int) or not 0 <= ignore <= 255 or ignore < len(names):
        raise Teacher2DDataError(f"{path}: 'ignore_index' must be an integer in [{len(names)}, 255], got {ignore!r}")
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


# --------------------------------------------------------------------------------------------------- metrics
def confusion_matrix(pred: Tensor | np.ndarray, label: Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = 255) -> Tensor:
    """(C, C) int64 counts, rows = ground-truth class, columns = predicted class; ignore_index pixels excluded."""
    pred, label = torch.as_tensor(pred).reshape(-1).long(), torch.as_tensor(label).reshape(-1).long()
    if pred.shape != label.shape:
        raise ValueError(f"prediction and label sizes differ: {pred.numel()} vs {label.numel()} pixels")
    keep = label != ignore_index
    pred, label = pred[keep], label[keep]
    if label.numel() and (label.min() < 0 or label.max() >= num_classes):
        raise ValueError(f"label values must be in [0, {num_classes}) or {ignore_index}")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted classes must be in [0, {num_classes})")
    return torch.bincount(label * num_classes + pred, minlength=num_classes * num_classes).view(num_classes, num_classes)


def segmentation_metrics(conf: Tensor | np.ndarray, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Pixel accuracy, mIoU and per-class IoU from a confusion matrix (rows = ground truth).

    IoU_c = TP / (TP + FP + FN).  A class absent from both labels and predictions has IoU None and is left out of
    the mean.  per_class_accuracy_c = TP / ground-truth pixels of c (None without any).
    """
    conf = torch.as_tensor(conf).double()
    c = conf.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    tp = conf.diag()
    gt, pr = conf.sum(1), conf.sum(0)
    union = gt + pr - tp
    total = conf.sum().item()
    iou = [tp[k].item() / union[k].item() if union[k] > 0 else None for k in range(c)]
    acc = [tp[k].item() / gt[k].item() if gt[k] > 0 else None for k in range(c)]
    valid = [v for v in iou if v is not None]
    return {
        "pixel_accuracy": tp.sum().item() / total if total else float("nan"),
        "mean_iou": sum(valid) / len(valid) if valid else float("nan"),
        "per_class_iou": dict(zip(names, iou)),
        "per_class_accuracy": dict(zip(names, acc)),
        "pixels": int(total),
    }


# ---------------------------------------------------------------------------------------------- checkpoints
def load_seg_teacher(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SegTeacher:
    """Rebuild the segmentation network (backbone + head) of a `ppkt teacher train` checkpoint, in eval mode."""
    path = Path(path)
    state = load_checkpoint(path, TEACHER_CKPT_FORMAT)  # weights_only=True; CheckpointError names the file
    arch, num_classes = state.get("arch"), state.get("num_classes")
    if arch not in SEG_ARCHS:
        raise CheckpointError(f"{path}: a '{TEACHER_CKPT_FORMAT}' file for arch {arch!r}; segmentation teachers are {SEG_ARCHS}")
    if state.get("version") != SEG_TEACHER_VERSION or not isinstance(state.get("head"), Mapping):
        raise CheckpointError(f"{path}: not a version-{SEG_TEACHER_VERSION} segmentation teacher (version "
                              f"{state.get('version')!r}, head {'present' if 'head' in state else 'missing'}); "
                              "it can still serve as a PPKT teacher through build_teacher")
    if not isinstance(num_classes, int) or num_classes < 1 or not isinstance(state.get("backbone"), Mapping):
        raise CheckpointError(f"{path}: bad 'num_classes' ({num_classes!r}) or missing 'backbone'")
    model = SegTeacher(arch, num_classes)
    load_state_strict(model.backbone, state["backbone"], path, "backbone")
    load_state_strict(model.head, state["head"], path, "head")
    model.class_names = list(state.get("class_names") or model.class_names)
    model.ignore_index = int(state.get("ignore_index", 255))
    size = (state.get("train") or {}).get("image_size")
    model.train_image_size = (int(size[0]), int(size[1])) if size else None
    return model.to(map_location).eval()


# ------------------------------------------------------------------------------------------------- training
def _device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={requested!r} but no CUDA device is usable here; use --device cpu or auto")
    return torch.device(requested)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def _lr_factor(i: int, iterations: int, warmup: int, power: float = 0.9) -> float:
    """Linear warmup over `warmup` iterations, then poly decay (1 - progress) ** power."""
    if i < warmup:
        return (i + 1) / warmup
    return (1.0 - (i - warmup) / max(1, iterations - warmup)) ** power


def _plot(metrics_path: Path, png_path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = [r for r in read_metrics(metrics_path) if "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    its, loss = [r["iteration"] for r in rec], [r["loss"] for r in rec]
    ax.plot(its, loss, lw=0.8, alpha=0.5, label="batch")
    if len(loss) >= 10:
        k = max(5, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(its[k - 1:], smooth, lw=1.6, label=f"mean of {k}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def side_files(out_file: str | os.PathLike) -> Tuple[Path, Path]:
    """(metrics JSONL, loss-curve PNG) written beside a teacher checkpoint: <stem>.metrics.jsonl, <stem>.loss.png."""
    out = Path(out_file)
    return out.with_name(out.stem + ".metrics.jsonl"), out.with_name(out.stem + ".loss.png")


def train_teacher2d(
    data_root: str | os.PathLike,
    out_file: str | os.PathLike,
    arch: str = "resnet18",
    iterations: int = DEFAULT_ITERATIONS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    workers: int = 0,
    device: str = "auto",
    progress: bool = True,
    backbone_weights: str = "none",
    weight_decay: float = 1e-2,
    warmup: Optional[int] = None,
    scale_range: Sequence[float] = DEFAULT_SCALE_RANGE,
    eval_split: Optional[str] = "val",
    log_every: int = 1,
) -> Dict[str, Any]:
    """Train a ResNet-FCN on DATA's train split and save it as a PPKT teacher checkpoint (atomically).

    Optimiser: AdamW (lr, weight_decay) with a linear warmup over `warmup` iterations (default 5% of them) and a
    poly (power 0.9) decay to 0; loss: pixel cross-entropy, ignore_index from classes.json (255) excluded.
    Every random choice is derived from `seed` (initial weights; per-sample augmentation seeds; frame order), so
    two runs on the CPU with the same arguments give the same weights, whatever `workers` is.

    Defaults (iterations=800, batch_size=8, lr=1e-3, image_size=(240, 320), resnet18 from random init, workers=0)
    are sized for the default synthetic dataset (40 scenes x 25 frames of 240 x 320, 32 train scenes = 800 frames)
    on 2 CPU cores: one iteration (forward + backward of 8 crops of 240 x 320, AdamW step) measured 0.51 s in a
    120-iteration run (0.7-0.8 s in a noisier micro-benchmark), reading + augmenting a frame 2 ms, so training takes
    about 7 minutes (800 x 0.51 s; up to 10 at 0.75 s/it) plus about 5 s to evaluate the 200 val frames: 6400 crops,
    8 epochs.  Data loading is 3% of an iteration, hence no worker processes by default (they would compete for
    the two cores).  AdamW at 1e-3 with 5% warmup learns fast from random init in few steps (a 120-iteration run
    on textured-rectangle frames reached 85% val mIoU).  Random scale in (0.75, 1.5) x the frame-to-crop factor
    and flips cover the teacher's input at pretraining, which fits frames to data.image_size times a factor in
    augment.resize = (0.8, 1.2): train with --image-size equal to the pretraining's data.image_size.
    On a GPU, raise iterations (e.g. 5000) and batch_size (16).

    Writes out_file, and beside it <stem>.metrics.jsonl (iteration, loss, lr, images_per_s) and <stem>.loss.png.
    Returns {"checkpoint", "metrics_file", "loss_curve", "final_loss", "seconds", "val" (metrics or None)}.
    """
    t0 = time.perf_counter()
    arch = arch.lower().replace("-", "_")
    if arch not in SEG_ARCHS:
        raise ValueError(f"Unknown segmentation teacher arch '{arch}'; choose one of {SEG_ARCHS}.")
    if iterations < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need iterations >= 1, batch_size >= 1, lr > 0 (got {iterations}, {batch_size}, {lr})")
    image_size = (int(image_size[0]), int(image_size[1]))
    warmup = max(1, round(0.05 * iterations)) if warmup is None else max(1, int(warmup))
    dev = _device(device)
    out_file = Path(out_file)
    metrics_file, curve_file = side_files(out_file)

    dataset = SegFrames(data_root, "train", image_size, augment=True, scale_range=scale_range)
    val_set = None
    if eval_split and (Path(data_root) / "splits" / f"{eval_split}.txt").is_file():
        val_set = SegFrames(data_root, eval_split, image_size, augment=False)  # checked before training starts
    names, ignore = dataset.class_names, dataset.ignore_index

    torch.manual_seed(seed)  # initial weights (and dropout, drawn from the global generator)
    model = SegTeacher(arch, len(names), backbone_weights).to(dev)
    model.class_names, model.ignore_index, model.train_image_size = list(names), ignore, image_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: _lr_factor(i, iterations, warmup))
    sampler = IterationBatchSampler(len(dataset), batch_size, seed, 0, iterations)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, worker_init_fn=_one_thread,
                        pin_memory=dev.type == "cuda")

    out_file.parent.mkdir(parents=True, exist_ok=True)
    metrics_file.write_text("")
    losses: List[float] = []
    bar = tqdm(total=iterations, desc=f"teacher2d {arch}", unit="it", disable=not progress, dynamic_ncols=True)
    t_last, seen = time.perf_counter(), 0
    model.train()
    with metrics_file.open("a") as log:
        for it, (images, labels) in enumerate(loader):
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            logits = model(images)
            valid = (labels != ignore).sum()
            loss = F.cross_entropy(logits, labels, ignore_index=ignore, reduction="sum") / valid.clamp(min=1)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"iteration {it}: loss is {loss.item()}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_now = optimizer.param_groups[0]["lr"]
            schedule.step()
            losses.append(loss.item())
            seen += images.shape[0]
            done = it + 1
            if done % log_every == 0 or done == iterations or it == 0:
                now = time.perf_counter()
                rec = {"iteration": done, "loss": losses[-1], "lr": lr_now, "images_per_s": seen / max(now - t_last, 1e-9)}
                t_last, seen = now, 0
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr_now:.3g}", refresh=False)
            bar.update(1)
    bar.close()
    train_seconds = time.perf_counter() - t0
    _plot(metrics_file, curve_file, f"2D segmentation teacher ({arch})")

    val = None
    if val_set is not None:
        val = _evaluate(model, val_set, dev, progress)
    tail = losses[-min(10, len(losses)):]
    metrics = {"final_loss": float(np.mean(tail)), "first_loss": losses[0], "train_seconds": train_seconds}
    if val is not None:
        metrics["val"] = val
    settings = {
        "data_root": str(Path(data_root)), "train_frames": len(dataset), "train_scenes": len(dataset.scenes),
        "iterations": iterations, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "warmup": warmup,
        "optimizer": "AdamW", "schedule": "linear warmup + poly 0.9", "image_size": list(image_size),
        "scale_range": list(dataset.scale_range), "flip": dataset.flip, "seed": seed,
        "backbone_weights": backbone_weights, "device": str(dev),
    }
    cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
    save_atomic({
        "format": TEACHER_CKPT_FORMAT, "version": SEG_TEACHER_VERSION, "arch": arch,
        "backbone": cpu(model.backbone.state_dict()), "head": cpu(model.head.state_dict()),
        "num_classes": len(names), "class_names": list(names), "ignore_index": ignore,
        "metrics": metrics, "train": settings,
    }, out_file)
    return {"checkpoint": str(out_file), "metrics_file": str(metrics_file), "loss_curve": str(curve_file),
            "final_loss": metrics["final_loss"], "seconds": time.perf_counter() - t0, "val": val}


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def _evaluate(model: SegTeacher, dataset: SegFrames, dev: torch.device, progress: bool = False,
              batch_size: int = 8) -> Dict[str, Any]:
    """Confusion matrix over every labelled pixel of the dataset (labels at full resolution)."""
    was_training = model.training
    model.eval()
    c = model.num_classes
    conf = torch.zeros(c, c, dtype=torch.int64)
    pending: List[Tuple[Tensor, Tensor]] = []

    def flush() -> None:
        images = torch.stack([p[0] for p in pending]).to(dev)
        labels = torch.stack([p[1] for p in pending])
        logits = model(images)
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        conf.add_(confusion_matrix(logits.argmax(1).cpu(), labels, c, dataset.ignore_index))
        pending.clear()

    for i in tqdm(range(len(dataset)), desc=f"eval {dataset.split}", unit="frame", disable=not progress, leave=False):
        image, label = dataset[i]
        if pending and (pending[0][0].shape != image.shape or pending[0][1].shape != label.shape):
            flush()
        pending.append((image, label))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    model.train(was_training)
    out = segmentation_metrics(conf, model.class_names)
    out.update({"split": dataset.split, "frames": len(dataset), "class_names": list(model.class_names),
                "confusion_matrix": conf.tolist()})
    return out


def evaluate_teacher2d(checkpoint: str | os.PathLike | SegTeacher, data_root: str | os.PathLike, split: str = "val",
                       device: str = "auto", progress: bool = False) -> Dict[str, Any]:
    """Pixel accuracy, mIoU and per-class IoU of a segmentation teacher on a split's frames (full resolution).

    The image is resized like in training (by max(H_train / H, W_train / W)); logits are upsampled to the label.
    Returns segmentation_metrics(...) plus "split", "frames", "class_names", "confusion_matrix" (rows = truth).
    """
    dev = _device(device)
    model = checkpoint if isinstance(checkpoint, SegTeacher) else load_seg_teacher(checkpoint)
    model = model.to(dev)
    size = model.train_image_size
    names, _ = read_classes(data_root)
    unnamed = list(model.class_names) == [str(i) for i in range(model.num_classes)]  # a SegTeacher built by hand
    if len(names) != model.num_classes or (not unnamed and list(names) != list(model.class_names)):
        where = checkpoint if not isinstance(checkpoint, SegTeacher) else "the model"
        raise Teacher2DDataError(f"{Path(data_root) / 'classes.json'}: classes {names} differ from those of {where} "
                                 f"({model.class_names})")
    dataset = SegFrames(data_root, split, size, augment=False)  # size None: evaluate at the stored resolution
    return _evaluate(model, dataset, dev, progress)


def format_iou_table(metrics: Mapping[str, Any]) -> str:
    """Per-class IoU / accuracy table with the totals, as printed by `ppkt teacher eval`."""
    names = list(metrics["per_class_iou"])
    conf = metrics.get("confusion_matrix")
    width = max([5] + [len(n) for n in names])
    fmt = lambda v: "   n/a" if v is None else f"{100 * v:6.2f}"  # noqa: E731
    lines = [f"{'id':>3}  {'class':<{width}}  {'IoU %':>6}  {'acc %':>6}  {'pixels':>10}"]
    for k, n in enumerate(names):
        px = sum(conf[k]) if conf else 0
        lines.append(f"{k:>3}  {n:<{width}}  {fmt(metrics['per_class_iou'][n])}  "
                     f"{fmt(metrics['per_class_accuracy'][n])}  {px:>10}")
    lines.append(f"mIoU {100 * metrics['mean_iou']:.2f}%  pixel accuracy {100 * metrics['pixel_accuracy']:.2f}%  "
                 f"({metrics.get('frames', '?')} frames, {metrics['pixels']} labelled pixels, split {metrics.get('split', '?')})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ CLI
def _cmd_train(args: argparse.Namespace) -> int:
    result = train_teacher2d(args.data, args.out, arch=args.arch, iterations=args.iterations, batch_size=args.batch_size,
                             lr=args.lr, image_size=tuple(args.image_size), seed=args.seed, workers=args.workers,
                             device=args.device, backbone_weights=args.backbone_weights,
                             eval_split=None if args.no_eval else "val")
    print(f"checkpoint: {result['checkpoint']}  ({result['seconds']:.0f} s, final loss {result['final_loss']:.4f})")
    print(f"metrics: {result['metrics_file']}  curve: {result['loss_curve']}")
    if result["val"] is not None:
        print(format_iou_table(result["val"]))
    print(f"use it as the PPKT teacher: teacher.arch={args.arch} teacher.weights={result['checkpoint']}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    metrics = evaluate_teacher2d(args.checkpoint, args.data, split=args.split, device=args.device, progress=True)
    print(format_iou_table(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    return 0


def add_teacher_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `teacher train` and `teacher eval` to the `ppkt` command's subparsers; returns the `teacher` parser."""
    teacher = subparsers.add_parser("teacher", help="train / evaluate a 2D segmentation teacher on rendered 2D labels")
    sub = teacher.add_subparsers(dest="teacher_command", metavar="{train,eval}")
    teacher.set_defaults(func=lambda _args: (teacher.print_help(), 2)[1])

    p = sub.add_parser("train", help="train a ResNet-FCN on DATA's train split; its backbone is a PPKT teacher")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset root (classes.json, splits/, frames/)")
    p.add_argument("--out", required=True, metavar="FILE", help="checkpoint to write, e.g. runs/teacher2d.pt")
    p.add_argument("--arch", default="resnet18", choices=SEG_ARCHS, help="backbone (default resnet18)")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help=f"default {DEFAULT_ITERATIONS}")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"default {DEFAULT_BATCH_SIZE}")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"AdamW peak learning rate (default {DEFAULT_LR:g})")
    p.add_argument("--image-size", type=int, nargs=2, default=list(DEFAULT_IMAGE_SIZE), metavar=("H", "W"),
                   help="training crop size; use the pretraining's data.image_size (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--workers", type=int, default=0, help="data loading processes (0: in the training process)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--backbone-weights", default="none", help="backbone init: none | imagenet | checkpoint path")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation on the val split after training")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="pixel accuracy, mIoU and per-class IoU of a teacher checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--split", default="val", help="split file under DATA/splits (default val)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    p.set_defaults(func=_cmd_eval)
    return teacher
