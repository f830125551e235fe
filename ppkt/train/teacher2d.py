"""Training and evaluation of the 2D segmentation teacher (`ppkt teacher train` / `evaluate`).

2D labels are cheap, 3D labels are not: a ResNet-FCN (`ppkt.models.seg_teacher.SegTeacher`, as in the paper's
Table 5, there trained on ADE20k) is trained for semantic segmentation on rendered frames (`ppkt.data.labels2d`
describes the dataset layout), and its backbone is then the frozen PPKT teacher:

    ppkt teacher train --data DATA --out runs/teacher2d.pt
    ppkt teacher evaluate --checkpoint runs/teacher2d.pt --data DATA
    # pretraining config: teacher.arch=resnet18 teacher.weights=runs/teacher2d.pt
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from ppkt.data.labels2d import SegFrames, Teacher2DDataError, read_classes
from ppkt.models.catalog import teacher_key
from ppkt.models.seg_teacher import SEG_ARCHS, SEG_TEACHER_VERSION, SegTeacher, load_seg_teacher
from ppkt.models.teacher import TEACHER_CKPT_FORMAT
from ppkt.checkpoint import save_atomic
from ppkt.progress import Progress
from ppkt.provenance import stamp
# Defaults of `train_teacher2d` (see its docstring for why); DEFAULT_IMAGE_SIZE / DEFAULT_SCALE_RANGE are SegFrames'.
from ppkt.teacher2d_defaults import (DEFAULT_BATCH_SIZE, DEFAULT_IMAGE_SIZE, DEFAULT_ITERATIONS, DEFAULT_LR,
                                     DEFAULT_SCALE_RANGE)
from ppkt.device import pick_device
from ppkt.train.logging import plot_loss_curve
from ppkt.train.metrics import confusion_matrix, segmentation_metrics
from ppkt.train.sampler import IterationBatchSampler, one_thread_worker
from ppkt.train.schedule import lambda_schedule, warmup_decay_factor
from ppkt.train.step import optimizer_step

__all__ = ["train_teacher2d", "evaluate_teacher2d", "side_files"]


# ------------------------------------------------------------------------------------------------- training
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
    arch = teacher_key(arch)
    if arch not in SEG_ARCHS:
        raise ValueError(f"Unknown segmentation teacher arch '{arch}'; choose one of {SEG_ARCHS}.")
    if iterations < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need iterations >= 1, batch_size >= 1, lr > 0 (got {iterations}, {batch_size}, {lr})")
    image_size = (int(image_size[0]), int(image_size[1]))
    warmup = max(1, round(0.05 * iterations)) if warmup is None else max(1, int(warmup))
    dev = pick_device(device, what="--device")
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
    schedule = lambda_schedule(optimizer, lambda i: warmup_decay_factor(i, iterations, warmup, "poly", 0.9))
    sampler = IterationBatchSampler(len(dataset), batch_size, seed, 0, iterations)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, worker_init_fn=one_thread_worker,
                        pin_memory=dev.type == "cuda")

    out_file.parent.mkdir(parents=True, exist_ok=True)
    metrics_file.write_text("")
    losses: List[float] = []
    t_last, seen = time.perf_counter(), 0
    report_every = max(1, iterations // 20)  # a progress line every 5% in a log file
    model.train()
    with Progress(iterations, f"teacher2d {arch}", enabled=progress) as bar, metrics_file.open("a") as log:
        for it, (images, labels) in enumerate(loader):
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            logits = model(images)
            valid = (labels != ignore).sum()
            loss = F.cross_entropy(logits, labels, ignore_index=ignore, reduction="sum") / valid.clamp(min=1)
            lr_now = optimizer_step(loss, optimizer, schedule, it, "lower the learning rate")[0]
            losses.append(loss.item())
            seen += images.shape[0]
            done = it + 1
            if done % log_every == 0 or done == iterations or it == 0:
                now = time.perf_counter()
                rec = {"iteration": done, "loss": losses[-1], "lr": lr_now, "images_per_s": seen / max(now - t_last, 1e-9)}
                t_last, seen = now, 0
                log.write(json.dumps(rec) + "\n")
                log.flush()
            bar.update(1)
            if done % report_every == 0 or done == iterations or it == 0:
                bar.report(loss=losses[-1], lr=lr_now)
    train_seconds = time.perf_counter() - t0
    plot_loss_curve(metrics_file, curve_file, f"2D segmentation teacher ({arch})", ylabel="cross-entropy loss",
                    smooth=True)

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
        "metrics": metrics, "train": settings, "ppkt": stamp(),
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
