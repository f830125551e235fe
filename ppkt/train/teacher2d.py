"""Training and evaluation of the 2D segmentation teacher (`ppkt teacher train` / `evaluate`).

2D labels are cheap, 3D labels are not: a ResNet-FCN (`ppkt.models.seg_teacher.SegTeacher`, as in the paper's
Table 5, there trained on ADE20k) is trained for semantic segmentation on rendered frames (`ppkt.data.labels2d`
describes the dataset layout), and its backbone is then the frozen PPKT teacher:

    ppkt teacher train --data DATA --out runs/teacher2d.pt
    ppkt teacher evaluate --checkpoint runs/teacher2d.pt --data DATA
    # pretraining config: teacher.arch=resnet18 teacher.weights=runs/teacher2d.pt
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ppkt.checkpoint import save_atomic
from ppkt.data.labels2d import SegFrames, Teacher2DDataError, read_classes
from ppkt.device import pick_device
from ppkt.models.catalog import teacher_key
from ppkt.models.seg_teacher import SEG_ARCHS, SEG_TEACHER_VERSION, SegTeacher, load_seg_teacher
from ppkt.models.teacher import TEACHER_CKPT_FORMAT
from ppkt.progress import Progress
from ppkt.provenance import stamp
# Defaults of `train_teacher2d` (see its docstring for why); DEFAULT_IMAGE_SIZE / DEFAULT_SCALE_RANGE are SegFrames'.
from ppkt.teacher2d_defaults import (DEFAULT_BATCH_SIZE, DEFAULT_IMAGE_SIZE, DEFAULT_ITERATIONS, DEFAULT_LR,
                                     DEFAULT_SCALE_RANGE)
from ppkt.train.distributed import Dist
from ppkt.train.logging import read_metrics
from ppkt.train.metrics import confusion_matrix, segmentation_metrics
from ppkt.train.run import RunFiles, Task, train
from ppkt.train.schedule import lambda_schedule, warmup_decay_factor

__all__ = ["train_teacher2d", "evaluate_teacher2d", "side_files", "Teacher2DConfig"]


# ------------------------------------------------------------------------------------------------- training
TEACHER2D_RUN_FORMAT = "ppkt-teacher2d-run"  # the resumable state beside the checkpoint (<stem>.last.pt)
TEACHER2D_SAFE_KEYS = ("train.workers", "train.threads", "train.device", "train.log_every", "train.checkpoint_every")


@dataclass
class Teacher2DTrainConfig:
    iterations: int = DEFAULT_ITERATIONS
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads, 0 = torch's default
    log_every: int = 1
    checkpoint_every: int = 100
    out: str = "runs/teacher2d.pt"  # the teacher checkpoint (run files beside it: <stem>.last.pt, .metrics.jsonl, ...)


@dataclass
class Teacher2DConfig:
    """Everything `train_teacher2d` trains with (saved beside the checkpoint as <stem>.config.yaml; a resume checks it)."""

    data: str = ""  # dataset root (ppkt.data.labels2d)
    arch: str = "resnet18"
    backbone_weights: str = "none"  # none | imagenet | a checkpoint
    lr: float = DEFAULT_LR
    weight_decay: float = 1e-2
    warmup: int = 0  # iterations of linear warmup
    image_size: List[int] = field(default_factory=lambda: list(DEFAULT_IMAGE_SIZE))  # [H, W] pixels
    scale_range: List[float] = field(default_factory=lambda: list(DEFAULT_SCALE_RANGE))
    eval_split: Optional[str] = "val"
    train: Teacher2DTrainConfig = field(default_factory=Teacher2DTrainConfig)


def side_files(out_file: str | os.PathLike) -> Tuple[Path, Path]:
    """(metrics JSONL, loss-curve PNG) written beside a teacher checkpoint: <stem>.metrics.jsonl, <stem>.loss.png."""
    out = Path(out_file)
    return out.with_name(out.stem + ".metrics.jsonl"), out.with_name(out.stem + ".loss.png")


def teacher_files(out_file: str | os.PathLike) -> RunFiles:
    """A teacher run's files: the checkpoint `out_file` and, beside it, <stem>.last.pt (resumable state),
    <stem>.metrics.jsonl, <stem>.loss.png and <stem>.config.yaml."""
    out = Path(out_file)
    metrics, curve = side_files(out)
    beside = lambda suffix: out.with_name(out.stem + suffix)  # noqa: E731
    return RunFiles(out.parent, beside(".last.pt"), None, metrics, None, curve, beside(".config.yaml"), None,
                    beside(".eval"), (out,))


class Teacher2D(Task):
    """A ResNet-FCN on rendered frames' 2D labels: pixel cross-entropy (ignore_index excluded), AdamW, linear warmup
    then poly 0.9 decay; at the end the val split's mIoU and the teacher checkpoint (`TEACHER_CKPT_FORMAT`)."""

    format, safe_keys, rate, ylabel = TEACHER2D_RUN_FORMAT, TEACHER2D_SAFE_KEYS, "images_per_s", "cross-entropy loss"
    command = "teacher train"
    hint = "lower the learning rate"

    def __init__(self, cfg: Teacher2DConfig, quiet: bool = False):
        super().__init__(cfg, teacher_files(cfg.train.out))
        self.title = f"teacher2d {cfg.arch}"
        self.curve_title = f"2D segmentation teacher ({cfg.arch})"
        self.report_every = max(1, cfg.train.iterations // 20)  # a progress line every 5% in a log file
        self.quiet = quiet

    def resume_command(self) -> str:
        return f"ppkt teacher train --data {self.cfg.data} --out {self.cfg.train.out}"

    def validate(self) -> None:
        c, t = self.cfg, self.cfg.train
        if c.arch not in SEG_ARCHS:
            raise ValueError(f"Unknown segmentation teacher arch '{c.arch}'; choose one of {SEG_ARCHS}.")
        if t.iterations < 1 or t.batch_size < 1 or not c.lr > 0:
            raise ValueError(f"need iterations >= 1, batch_size >= 1, lr > 0 (got {t.iterations}, {t.batch_size}, {c.lr})")

    def build(self, d: Dist, device: torch.device, resumed: bool) -> None:
        c, t = self.cfg, self.cfg.train
        self.device, self.t0 = device, time.perf_counter()
        self.dataset = SegFrames(c.data, "train", tuple(c.image_size), augment=True, scale_range=tuple(c.scale_range))
        if c.eval_split and (Path(c.data) / "splits" / f"{c.eval_split}.txt").is_file():
            self.val = SegFrames(c.data, c.eval_split, tuple(c.image_size), augment=False)  # checked before training
        self.names, self.ignore = self.dataset.class_names, self.dataset.ignore_index
        torch.manual_seed(t.seed)  # initial weights
        self.model = model = SegTeacher(c.arch, len(self.names), c.backbone_weights).to(device)
        model.class_names, model.ignore_index, model.train_image_size = list(self.names), self.ignore, tuple(c.image_size)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.scheduler = lambda_schedule(self.optimizer,
                                         lambda i: warmup_decay_factor(i, t.iterations, c.warmup, "poly", 0.9))

    def loss(self, net, batch, it, device):
        images, labels = (x.to(device, non_blocking=True) for x in batch)
        torch.manual_seed(self.cfg.train.seed * 1_000_003 + it)  # dropout's draws: the same after a resume
        logits = net(images)
        valid = (labels != self.ignore).sum()
        return F.cross_entropy(logits, labels, ignore_index=self.ignore, reduction="sum") / valid.clamp(min=1)

    def count(self, batch) -> int:
        return batch[0].shape[0]

    def evaluate(self, out_dir):
        return _evaluate(self.model, self.val, self.device, progress=not self.quiet)

    def val_values(self, s):
        return {"val_miou": s["miou"], "val_macc": s["macc"], "val_allacc": s["allacc"]}

    def finish(self, s: Optional[Dict[str, Any]]) -> None:
        """Write the teacher checkpoint (atomically): backbone and head, classes, metrics, the training settings."""
        c, t = self.cfg, self.cfg.train
        losses = [r["loss"] for r in read_metrics(self.files.metrics) if "loss" in r]
        metrics = {"final_loss": float(np.mean(losses[-10:])), "first_loss": losses[0],
                   "train_seconds": time.perf_counter() - self.t0}
        if s is not None:
            metrics["val"] = s
        settings = {"data_root": str(Path(c.data)), "train_frames": len(self.dataset),
                    "train_scenes": len(self.dataset.scenes), "iterations": t.iterations, "batch_size": t.batch_size,
                    "lr": c.lr, "weight_decay": c.weight_decay, "warmup": c.warmup, "optimizer": "AdamW",
                    "schedule": "linear warmup + poly 0.9", "image_size": list(c.image_size),
                    "scale_range": list(self.dataset.scale_range), "flip": self.dataset.flip, "seed": t.seed,
                    "backbone_weights": c.backbone_weights, "device": str(self.device)}
        cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
        m = self.model
        save_atomic({"format": TEACHER_CKPT_FORMAT, "version": SEG_TEACHER_VERSION, "arch": c.arch,
                     "backbone": cpu(m.backbone.state_dict()), "head": cpu(m.head.state_dict()),
                     "num_classes": len(self.names), "class_names": list(self.names), "ignore_index": self.ignore,
                     "metrics": metrics, "train": settings, "ppkt": stamp()}, Path(t.out))
        self.result = {"checkpoint": t.out, "metrics_file": str(self.files.metrics),
                       "loss_curve": str(self.files.curve), "final_loss": metrics["final_loss"], "val": s}

    def summary(self, finished: bool) -> List[str]:
        return []  # `ppkt teacher train` prints its own


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
    checkpoint_every: int = 100,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: Optional[int] = None,
) -> Dict[str, Any]:
    """Train a ResNet-FCN on DATA's train split and save it as a PPKT teacher checkpoint (atomically), through the run
    skeleton (`ppkt.train.run.train`): a run whose files exist is refused unless `overwrite`; `resume` continues it
    from <stem>.last.pt (written every `checkpoint_every` iterations and on Ctrl-C) with the same results.
    `stop_after` ends early (for tests; the checkpoint file is written only by a finished run).

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
    cfg = Teacher2DConfig(
        data=str(data_root), arch=teacher_key(arch), backbone_weights=str(backbone_weights), lr=float(lr),
        weight_decay=float(weight_decay), warmup=max(1, round(0.05 * iterations)) if warmup is None else max(1, int(warmup)),
        image_size=[int(image_size[0]), int(image_size[1])], scale_range=[float(v) for v in scale_range],
        eval_split=eval_split or None,
        train=Teacher2DTrainConfig(iterations=int(iterations), batch_size=int(batch_size), seed=int(seed),
                                   workers=int(workers), device=device, log_every=int(log_every),
                                   checkpoint_every=int(checkpoint_every), out=str(out_file)))
    task = Teacher2D(cfg, quiet=not progress)
    train(task, resume=resume, stop_after=stop_after, overwrite=overwrite)
    return {**getattr(task, "result", {}), "seconds": time.perf_counter() - t0}


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

    with Progress(len(dataset), f"evaluate {dataset.split}", unit="frame", enabled=progress, leave=False) as bar:
        for i in range(len(dataset)):
            image, label = dataset[i]
            if pending and (pending[0][0].shape != image.shape or pending[0][1].shape != label.shape):
                flush()
            pending.append((image, label))
            if len(pending) == batch_size:
                flush()
            bar.update(1)
            if (i + 1) % max(1, len(dataset) // 10) == 0:
                bar.report()
        if pending:
            flush()
    model.train(was_training)
    return {**segmentation_metrics(conf, model.class_names), "split": dataset.split, "frames": len(dataset)}


def evaluate_teacher2d(checkpoint: str | os.PathLike | SegTeacher, data_root: str | os.PathLike, split: str = "val",
                       device: str = "auto", progress: bool = False) -> Dict[str, Any]:
    """mIoU, mAcc, allAcc and per-class IoU / accuracy of a segmentation teacher on a split's frames (full resolution).

    The image is resized like in training (by max(H_train / H, W_train / W)); logits are upsampled to the label.
    Returns `ppkt.train.metrics.segmentation_metrics` over every labelled pixel (count = pixels) plus "split" and
    "frames".
    """
    dev = pick_device(device, what="--device")
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
