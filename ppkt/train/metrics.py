"""Semantic segmentation metrics: a confusion matrix, overall accuracy / mIoU / per-class IoU from it, their table.

Inputs are class ids of any shape (images, point clouds): every element with a label other than ignore_index counts
once.  The result keys "pixel_accuracy" and "pixels" keep their names (stored in teacher checkpoints' metrics).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["confusion_matrix", "segmentation_metrics", "format_iou_table"]


def confusion_matrix(pred: Tensor | np.ndarray, label: Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = 255) -> Tensor:
    """(C, C) int64 counts, rows = ground-truth class, columns = predicted class; ignore_index elements excluded.

    pred and label hold class ids of the same number of elements, in any shape (both are flattened).
    """
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
    """Overall accuracy, mIoU and per-class IoU / accuracy from a confusion matrix (rows = ground truth).

    IoU_c = TP / (TP + FP + FN).  A class absent from both labels and predictions has IoU None and is left out of
    the mean.  per_class_accuracy_c = TP / ground-truth elements of c (None without any).
    Returns {"pixel_accuracy": overall accuracy, "mean_iou", "per_class_iou": {name: IoU}, "per_class_accuracy":
    {name: accuracy}, "pixels": number of labelled elements counted}.
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


def format_iou_table(metrics: Mapping[str, Any]) -> str:
    """Per-class IoU / accuracy / labelled-count table with the totals, of `segmentation_metrics` output.

    Reads the optional keys "confusion_matrix" (per-class counts; 0 without it), "frames" and "split" ("?" without).
    """
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
