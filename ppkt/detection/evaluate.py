"""Scoring 3D detections: mAP@0.25 / mAP@0.5 (ppkt.detection.ap) of a split, from a model or from prediction files.

Prediction files (any system's): ``DIR/<scene>.npy``, a (K, 9) float array, rows [cx, cy, cz, dx, dy, dz, heading,
class, score] (metres, radians, class = index in the dataset's detection class list); a scene without a file has
no detections. Outputs, each written atomically: ``metrics.json`` (keys ``mAP@0.25`` and ``mAP@0.5`` as fractions,
``per_class``, ``gt_boxes``, ``scenes``, ``split``), ``predictions/<scene>.npy`` (model runs) and, with ply,
``ply/<scene>_pred_boxes.ply`` / ``ply/<scene>_gt_boxes.ply`` (box meshes coloured by class).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ppkt.atomic import atomic_path, write_json
from ppkt.detection.ap import evaluate_detections
from ppkt.detection.boxes import corners
from ppkt.detection.dataset import DetScenes, collate_detection
from ppkt.detection.predict import proposals_to_boxes
from ppkt.errors import UserError
from ppkt.progress import Progress

# the 12 triangles of a box from its `corners` (0-3 bottom, 4-7 top, counter-clockwise)
BOX_FACES = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],
                      [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])


def write_box_ply(path: str | Path, boxes: np.ndarray, colors: np.ndarray) -> Path:
    """Boxes (K, >= 7) as one PLY triangle mesh (8 vertices, 12 faces each; vertex colours `colors` (K, 3) uint8)."""
    from plyfile import PlyData, PlyElement

    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(0, 7) if boxes.size == 0 else boxes
    verts = np.zeros(8 * len(boxes), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    faces = np.zeros(12 * len(boxes), dtype=[("vertex_indices", "i4", (3,))])
    for k, box in enumerate(boxes):
        c = corners(box[:7])
        for i, axis in enumerate("xyz"):
            verts[axis][8 * k:8 * k + 8] = c[:, i]
        for i, channel in enumerate(("red", "green", "blue")):
            verts[channel][8 * k:8 * k + 8] = colors[k][i]
        faces["vertex_indices"][12 * k:12 * k + 12] = BOX_FACES + 8 * k
    ply = PlyData([PlyElement.describe(verts, "vertex"), PlyElement.describe(faces, "face")], text=False,
                  byte_order="<", comments=["3D boxes written by ppkt"])
    with atomic_path(path) as tmp:
        ply.write(str(tmp))
    return Path(path)


def format_ap_table(m: Mapping[str, Any]) -> str:
    """Per-class AP@0.25 / AP@0.5 (%) and ground-truth counts, then the mAP line."""
    names = list(m["per_class"])
    width = max([5] + [len(n) for n in names])
    fmt = lambda v: "   n/a" if v is None else f"{100 * v:6.2f}"  # noqa: E731
    lines = [f"{'class':<{width}}  {'AP@.25':>6}  {'AP@.5':>6}  {'boxes':>6}"]
    for n in names:
        ap = m["per_class"][n]
        lines.append(f"{n:<{width}}  {fmt(ap.get('AP@0.25'))}  {fmt(ap.get('AP@0.5'))}  {m['gt_boxes'][n]:>6}")
    lines.append(f"mAP@0.25 {100 * m['mAP@0.25']:.2f}  mAP@0.5 {100 * m['mAP@0.5']:.2f}  "
                 f"({m.get('scenes', '?')} scenes, split {m.get('split', '?')})")
    return "\n".join(lines)


def score(predictions: Mapping[str, np.ndarray], truths: Mapping[str, np.ndarray], names: Sequence[str],
          out_dir: Optional[Path], split: str, axis_aligned: bool, ply_colors: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """metrics of `predictions` against `truths` (every scene of the split); writes metrics.json (and PLYs) to out_dir."""
    result = {**evaluate_detections(predictions, truths, names, (0.25, 0.5), axis_aligned), "scenes": len(truths),
              "split": split, "axis_aligned": bool(axis_aligned)}
    if out_dir is not None:
        write_json(Path(out_dir) / "metrics.json", result)
        if ply_colors is not None:
            for scene, truth in truths.items():
                pred = predictions.get(scene, np.zeros((0, 9)))
                write_box_ply(Path(out_dir) / "ply" / f"{scene}_gt_boxes.ply", truth, ply_colors[truth[:, 7].astype(int)])
                write_box_ply(Path(out_dir) / "ply" / f"{scene}_pred_boxes.ply", pred, ply_colors[pred[:, 7].astype(int)])
    return result


@torch.no_grad()
def predict_dataset(model, dataset: DetScenes, device: torch.device, min_score: float, nms_iou: float,
                    axis_aligned: bool, per_class: bool = True, progress: bool = True) -> Dict[str, np.ndarray]:
    """{scene name: (K, 9) boxes} of `model` (a VoteNet) on every scene of `dataset` (eval mode, one scene a pass)."""
    was_training = model.training
    model.eval()
    preds = {}
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate_detection)
    with Progress(len(dataset), "detect", unit="scene", enabled=progress, leave=False) as bar:
        for batch in loader:
            batch = batch.to(device)
            out = model(batch.feats, batch.coords, batch.xyz, batch.offsets)
            preds[batch.names[0]] = proposals_to_boxes(out, model.mean_size, model.num_heading_bins, min_score,
                                                       nms_iou, axis_aligned, per_class)[0]
            bar.update(1)
    model.train(was_training)
    return preds


def evaluate_detector(model, dataset: DetScenes, device: torch.device, e, out_dir: Optional[Path], split: str,
                      ply: bool = True, progress: bool = True) -> Dict[str, Any]:
    """Predict every scene of `dataset` with eval settings `e` (DetectionEvalConfig) and score them against the
    dataset's boxes; with out_dir, also write predictions/<scene>.npy, metrics.json and (ply) the box PLYs."""
    from ppkt.colors import class_colors

    preds = predict_dataset(model, dataset, device, e.min_score, e.nms_iou, e.axis_aligned, e.per_class, progress)
    if out_dir is not None:
        save_predictions(Path(out_dir) / "predictions", preds)
    truths = dict(zip((p.name for p in dataset.scenes), dataset.truth))
    names = dataset.classes.names
    return score(preds, truths, names, out_dir, split, e.axis_aligned,
                 class_colors(len(names)) if (out_dir is not None and ply) else None)


def read_prediction_dir(folder: str | Path, scenes: Sequence[str], num_classes: int) -> Dict[str, np.ndarray]:
    """{scene: (K, 9)} from DIR/<scene>.npy; UserError naming a file of the wrong shape, with NaN, sizes <= 0 or unknown
    classes, and when no file is named for a scene of the split; a warning names the files that match no scene."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"predictions folder {folder} does not exist")
    files = sorted(p.name for p in folder.glob("*.npy"))
    unmatched = [f for f in files if f[:-4] not in set(scenes)]
    if files and len(unmatched) == len(files):
        raise UserError(f"{folder}: none of its {len(files)} .npy files is named for a scene of the split (e.g. "
                        f"{files[0]}; the scenes are named like {scenes[0] if scenes else '?'}.npy)")
    if unmatched:
        print(f"warning: {folder}: {len(unmatched)} file(s) named for no scene of the split, not scored: "
              f"{', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}", file=sys.stderr)
    preds = {}
    for scene in scenes:
        path = folder / f"{scene}.npy"
        if not path.is_file():
            continue
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - an unreadable file is one clear error
            raise UserError(f"cannot read {path}: {err}") from None
        a = a.reshape(0, 9) if a.size == 0 else a
        if a.ndim != 2 or a.shape[1] != 9:
            raise UserError(f"{path}: expected a (K, 9) array [cx, cy, cz, dx, dy, dz, heading, class, score], "
                            f"got shape {a.shape}")
        if not np.isfinite(a).all():
            row = int(np.argwhere(~np.isfinite(a))[0, 0])
            raise UserError(f"{path}: row {row} holds NaN or infinite values")
        if (a[:, 3:6] <= 0).any():
            row = int(np.argwhere(a[:, 3:6] <= 0)[0, 0])
            raise UserError(f"{path}: row {row} has a size (dx, dy, dz) <= 0: {a[row, 3:6].tolist()}")
        bad = (a[:, 7] != np.round(a[:, 7])) | (a[:, 7] < 0) | (a[:, 7] >= num_classes)
        if bad.any():
            raise UserError(f"{path}: class column holds {a[bad, 7][0]}; classes are 0..{num_classes - 1}")
        preds[scene] = a.astype(np.float64)
    return preds


def split_truths(root: str | Path, split: str, classes) -> Dict[str, np.ndarray]:
    """{scene name: (G, 8) boxes} of every scene of `split` under `root` (ppkt.data.scenes.list_scenes)."""
    from ppkt.data.scenes import list_scenes
    from ppkt.detection.dataset import load_boxes

    return {p.name: load_boxes(p, classes) for p in list_scenes(root, split)}


def score_prediction_dir(predictions: str | Path, root: str | Path, split: str, out: str | Path,
                         classes: Optional[str] = None, axis_aligned: bool = False) -> Dict[str, Any]:
    """Score another system's DIR/<scene>.npy boxes on `split` of `root`; writes OUT/metrics.json."""
    from ppkt.detection.classes import get_detection_classes

    if classes is None and not (Path(root) / "detection_classes.json").is_file():
        raise UserError(f"{root}: no detection_classes.json; name the class list with --classes "
                        "(scannet18, sunrgbd10, synthetic or a detection_classes.json)")
    table = get_detection_classes(classes if classes is not None else root)
    truths = split_truths(root, split, table)
    preds = read_prediction_dir(predictions, list(truths), table.num_classes)
    result = score(preds, truths, table.names, Path(out), split, axis_aligned)
    result.update(predictions=str(predictions), scenes_with_predictions=len(preds), out_dir=str(out))
    write_json(Path(out) / "metrics.json", result)
    return result


def save_predictions(folder: Path, predictions: Mapping[str, np.ndarray]) -> None:
    """DIR/<scene>.npy (K, 9) float32 per scene, each written atomically (the format --predictions reads)."""
    for scene, p in predictions.items():
        with atomic_path(Path(folder) / f"{scene}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(p, dtype=np.float32).reshape(-1, 9))
