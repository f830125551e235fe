"""Semantic segmentation metrics, one schema for 2D (pixels) and 3D (points): a confusion matrix, the scores from it
(miou, macc, allacc, per_class_iou, per_class_acc, count, confusion_matrix, class_names) and their table.

Inputs are class ids of any shape (images, point clouds): every element with a label other than ignore_index counts
once.  Teacher checkpoints written before this schema store mean_iou / pixel_accuracy / per_class_accuracy / pixels:
`upgrade_metric_keys` renames them.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["confusion_matrix", "segmentation_metrics", "upgrade_metric_keys", "format_iou_table"]


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
    """Scores of a (C, C) confusion matrix (rows = ground truth, columns = prediction), for pixels or points alike.

    IoU_c = TP_c / (TP_c + FP_c + FN_c), acc_c = TP_c / GT_c, allacc = sum_c TP_c / count. A class absent from both
    labels and predictions has IoU None and is left out of miou; one absent from the labels has acc None and is
    left out of macc.  Returns {"miou", "macc", "allacc" (floats in [0, 1], nan without any labelled element),
    "per_class_iou", "per_class_acc" ({name: float or None}), "count" (labelled elements counted),
    "confusion_matrix" (nested lists of ints), "class_names"}.  Callers add "split" and "scenes" or "frames".
    """
    counts = torch.as_tensor(conf)
    conf = counts.double()
    c = conf.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    tp = conf.diag()
    gt, pr = conf.sum(1), conf.sum(0)
    union = gt + pr - tp
    total = conf.sum().item()
    iou = [tp[k].item() / union[k].item() if union[k] > 0 else None for k in range(c)]
    acc = [tp[k].item() / gt[k].item() if gt[k] > 0 else None for k in range(c)]
    return {
        "miou": _mean_of_known(iou),
        "macc": _mean_of_known(acc),
        "allacc": tp.sum().item() / total if total else float("nan"),
        "per_class_iou": dict(zip(names, iou)),
        "per_class_acc": dict(zip(names, acc)),
        "count": int(total),
        "confusion_matrix": counts.tolist(),
        "class_names": names,
    }


def _mean_of_known(values) -> float:
    """Mean of the values that are not None; nan when there is none."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else float("nan")


# Keys of the metrics stored in teacher checkpoints written before the 2D and 3D scores shared one schema.
_OLD_KEYS = {"mean_iou": "miou", "pixel_accuracy": "allacc", "per_class_accuracy": "per_class_acc", "pixels": "count"}


def upgrade_metric_keys(metrics: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of `metrics` with the old 2D key names (mean_iou, pixel_accuracy, per_class_accuracy, pixels) renamed;
    macc is computed from per_class_acc when missing."""
    out = {_OLD_KEYS.get(k, k): v for k, v in metrics.items()}
    if "macc" not in out and isinstance(out.get("per_class_acc"), Mapping):
        out["macc"] = _mean_of_known(out["per_class_acc"].values())
    return out


def format_iou_table(metrics: Mapping[str, Any], unit: Optional[str] = None) -> str:
    """Per-class table (IoU %, acc %, labelled elements) and a totals line, of `segmentation_metrics` output.

    `unit` names the elements ("pixels", "points"); default: "pixels" when the metrics hold "frames", "points" when
    they hold "scenes".  Reads the optional keys "confusion_matrix" (per-class counts; 0 without it), "frames" or
    "scenes", and "split" ("?" without).  Metrics with the old 2D key names are accepted (`upgrade_metric_keys`).
    """
    m = upgrade_metric_keys(metrics)
    if unit is None:
        unit = "pixels" if "frames" in m else "points" if "scenes" in m else "elements"
    names = list(m["per_class_iou"])
    conf = m.get("confusion_matrix")
    width = max([5] + [len(n) for n in names])
    fmt = lambda v: "   n/a" if v is None else f"{100 * v:6.2f}"  # noqa: E731
    lines = [f"{'id':>3}  {'class':<{width}}  {'IoU %':>6}  {'acc %':>6}  {unit:>10}"]
    for k, n in enumerate(names):
        lines.append(f"{k:>3}  {n:<{width}}  {fmt(m['per_class_iou'][n])}  {fmt(m['per_class_acc'][n])}  "
                     f"{sum(conf[k]) if conf else 0:>10}")
    context = [f"{m[k]} {k}" for k in ("frames", "scenes") if k in m] + [f"{m['count']} labelled {unit}"]
    lines.append(f"mIoU {100 * m['miou']:.2f}  mAcc {100 * m['macc']:.2f}  allAcc {100 * m['allacc']:.2f}  "
                 f"({', '.join(context)}, split {m.get('split', '?')})")
    return "\n".join(lines)
