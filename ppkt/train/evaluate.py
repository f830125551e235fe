"""`ppkt evaluate`: segmentation scores on the ORIGINAL points of a split, as the paper evaluates ScanNet vertices.

Each scene is voxelised, the network predicts one class per voxel, and every original point takes the prediction of
the voxel it falls in (nearest-voxel back-assignment). Outputs in the evaluation folder, each written atomically:
``metrics.json`` (mIoU, mAcc, allAcc, per-class IoU / accuracy, confusion matrix), ``confusion.png`` (row-normalised)
and, per scene, ``ply/<scene>_pred.ply`` and ``ply/<scene>_gt.ply`` (x y z, colour of the predicted / true class,
and both class ids as int properties ``pred`` and ``label``; -1 = unlabelled).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ppkt.atomic import atomic_path, write_json
from ppkt.colors import class_colors
from ppkt.data.ply import write_ply
from ppkt.device import flush_denormals, pick_device
from ppkt.progress import Progress
from ppkt.train.metrics import confusion_matrix, segmentation_metrics

FINETUNE_FORMAT = "ppkt-finetune"


# ------------------------------------------------------------------------------------------------ points
def back_assign(voxel_pred: Tensor, point_to_voxel: Tensor) -> Tensor:
    """Per-point predictions (N,) from per-voxel ones (M,): point i takes the class of voxel point_to_voxel[i]."""
    point_to_voxel = torch.as_tensor(point_to_voxel, device=voxel_pred.device).long()
    if point_to_voxel.numel() and (int(point_to_voxel.min()) < 0 or int(point_to_voxel.max()) >= voxel_pred.shape[0]):
        raise ValueError(f"point_to_voxel must index the {voxel_pred.shape[0]} voxels, got range "
                         f"[{int(point_to_voxel.min())}, {int(point_to_voxel.max())}]")
    return voxel_pred[point_to_voxel]


# ------------------------------------------------------------------------------------------------ files
def save_confusion_png(conf: Tensor | np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (share of each true class predicted as each class), class names on the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(conf, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    c = len(names)
    size = max(5.0, 0.45 * c + 2.5)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(c), names, rotation=90)
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if c <= 25:
        for i in range(c):
            for j in range(c):
                if norm[i, j] >= 0.005:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(title or "confusion matrix (rows normalised)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


# ------------------------------------------------------------------------------------------------ running
@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset, names: Sequence[str], device: torch.device, ignore_index: int = -1,
                   out_dir: str | Path | None = None, scene_dirs: Optional[Sequence[Path]] = None, ply: bool = True,
                   workers: int = 0, split: str = "?", progress: bool = True, colors: np.ndarray | None = None) -> Dict[str, Any]:
    """Score `model` on every scene of `dataset` (a SegScenes in eval mode), one scene per forward pass.

    With `out_dir`, writes metrics.json, confusion.png and (ply=True, scene_dirs = the scene folders in dataset order,
    holding coord.npy) the prediction / ground-truth PLYs coloured with `colors` (C, 3) uint8 (default: a palette).
    Returns `ppkt.train.metrics.segmentation_metrics` (over every labelled point) plus "scenes" and "split".
    """
    from ppkt.data.scenes import collate_scenes

    was_training = model.training
    model.eval()
    c = len(names)
    colors = class_colors(c) if colors is None else np.asarray(colors, dtype=np.uint8)
    conf = torch.zeros(c, c, dtype=torch.long)
    loader = DataLoader(dataset, batch_sampler=[[(i, 0)] for i in range(len(dataset))], collate_fn=collate_scenes,
                        num_workers=workers)
    report_every = max(1, len(dataset) // 10)  # a progress line every 10% in a log file
    with Progress(len(dataset), f"evaluate {split}", unit="scene", enabled=progress, leave=False) as bar:
        for i, batch in enumerate(loader):
            logits = model(batch.feats.to(device), batch.coords.to(device), batch.batch_size)
            pred = back_assign(logits.argmax(1), batch.point_to_voxel[0]).cpu()
            label = torch.as_tensor(batch.point_labels[0]).long()
            conf += confusion_matrix(pred, label, c, ignore_index=ignore_index)
            if out_dir is not None and ply and scene_dirs is not None:
                _scene_plys(Path(out_dir) / "ply", Path(scene_dirs[i]), batch.names[0], pred.numpy(), label.numpy(),
                            colors)
            bar.update(1)
            if (i + 1) % report_every == 0:
                bar.report()
    model.train(was_training)
    result = {**segmentation_metrics(conf, names), "scenes": len(dataset), "split": split}
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(out_dir / "metrics.json", result)
        save_confusion_png(conf, names, out_dir / "confusion.png",
                           title=f"{split}: mIoU {100 * result['miou']:.1f}, allAcc {100 * result['allacc']:.1f}")
    return result


def _scene_plys(folder: Path, scene_dir: Path, name: str, pred: np.ndarray, label: np.ndarray, colors: np.ndarray) -> None:
    coord_file = scene_dir / "coord.npy"
    xyz = np.load(coord_file) if coord_file.is_file() else None
    if xyz is None or xyz.shape != (pred.shape[0], 3):
        warnings.warn(f"{coord_file}: missing or not ({pred.shape[0]}, 3) points; no PLY written for {name}")
        return
    unlabelled = np.zeros((1, 3), np.uint8)
    gt_rgb = np.where((label >= 0)[:, None], colors[np.clip(label, 0, len(colors) - 1)], unlabelled)
    write_ply(folder / f"{name}_pred.ply", xyz, colors[pred], "written by ppkt evaluate", pred=pred, label=label)
    write_ply(folder / f"{name}_gt.ply", xyz, gt_rgb, "written by ppkt evaluate", pred=pred, label=label)


def load_finetuned(path: str | Path, device: torch.device | str = "cpu"):
    """(segmentor in eval mode, class set, FinetuneConfig, raw state) from a ``ppkt-finetune`` checkpoint.

    state["class_colors"] holds the (C, 3) display colours chosen at training time."""
    from omegaconf import OmegaConf

    from ppkt.data.scenes import ClassSet
    from ppkt.models.segmentor import Segmentor
    from ppkt.checkpoint import load_checkpoint, load_state_strict
    from ppkt.train.finetune_config import FinetuneConfig

    state = load_checkpoint(path, FINETUNE_FORMAT)
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FinetuneConfig), state["config"]))
    classes = ClassSet(**state["classes"])
    from ppkt.data.features import in_channels

    model = Segmentor(cfg.model.arch, len(classes.names), in_channels(cfg.data.features), cfg.model.channels)
    load_state_strict(model, state["model"], path, "model")
    return model.to(device).eval(), classes, cfg, state


def default_eval_dir(checkpoint: str | Path, split: str) -> Path:
    """<run>/eval_<split> for <run>/checkpoints/<file>, else eval_<split> beside the checkpoint."""
    parent = Path(checkpoint).resolve().parent
    return (parent.parent if parent.name == "checkpoints" else parent) / f"eval_{split}"


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path | None = None, split: str = "val",
                        out: str | Path | None = None, device: str = "auto", workers: int = 0, ply: bool = True) -> Dict[str, Any]:
    """Evaluate a fine-tuned checkpoint on `split` of `data` (default: the root it was trained on); writes to `out`."""
    from ppkt.data.scenes import SegScenes, list_scenes

    dev = pick_device(device, what="--device")
    model, classes, cfg, state = load_finetuned(checkpoint, dev)
    scenes = list_scenes(data if data is not None else cfg.data.root, split, cfg.data.val_area)
    dataset = SegScenes(scenes, classes, voxel_size=cfg.data.voxel_size, train=False, augment=False,
                        features=cfg.data.features)
    out = Path(out) if out is not None else default_eval_dir(checkpoint, split)
    with flush_denormals(dev):  # as in training: denormals slow CPU sparse convs down
        # SegScenes maps every stored ignore value to -1
        result = evaluate_model(model, dataset, classes.names, dev, -1, out, scenes, ply, workers, split,
                                colors=state.get("class_colors"))
    result.update(checkpoint=str(checkpoint), iteration=int(state["iteration"]), out_dir=str(out))
    write_json(out / "metrics.json", result)
    return result
