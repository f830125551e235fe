"""`ppkt prepare sunrgbd`: VoteNet's ``sunrgbd_trainval`` folder -> scene folders with oriented detection boxes.

Input (what VoteNet's MATLAB extract_split.m / extract_rgbd_data_v2.m write), sample ``<id>`` = 6 digits:
``depth/<id>.mat`` (variable ``instance``, (N, 6): x, y, z metres in upright-depth coordinates, X right, Y forward,
Z up, then r, g, b in [0, 1]), ``label/<id>.txt`` (one object a line: ``class xmin ymin w2d h2d cx cy cz w l h ox
oy``: 2D box, 3D centre, HALF sizes, orientation vector of the l side), ``calib/<id>.txt`` (optional: Rtilt, then
K, 9 numbers each, column-major 3x3), ``train_data_idx.txt`` / ``val_data_idx.txt`` (one integer id a line).

Output ``<out>/scenes/<id>/``: ``coord.npy`` (N, 3) float32 metres, ``color.npy`` (N, 3) uint8, ``boxes.npy``
(K, 8) float32 [cx, cy, cz, dx, dy, dz, heading, class] in ppkt.detection.boxes' convention (dx = 2 l, dy = 2 w,
dz = 2 h, heading = arctan2(oy, ox) radians counter-clockwise: VoteNet's clockwise -arctan2 negated; class = index in
SUNRGBD_CLASSES; lines of other classes are dropped and counted), ``rtilt.npy`` and ``intrinsics.npy`` (3, 3)
float64 when the calib file exists. ``<out>/splits/{train,val}.txt`` and ``<out>/detection_classes.json``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ppkt.data.class_lists import SUNRGBD_CLASSES
from ppkt.atomic import write_json
from ppkt.data.scenes import SceneError
from ppkt.prepare.folders import build_folder

#: the 10 SUN RGB-D detection classes of VoteNet's benchmark; the class value stored is the index
SPLITS = ("train", "val")
_CLASS_IDS = {name: i for i, name in enumerate(SUNRGBD_CLASSES)}


def read_points(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """coord (N, 3) float32 metres and color (N, 3) uint8 of a ``depth/<id>.mat``."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise SceneError(f"{path}: file not found")
    try:
        mat = loadmat(str(path), variable_names=["instance"])
    except NotImplementedError:
        raise SceneError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7") from None
    except (MatReadError, ValueError, TypeError, OSError) as err:
        raise SceneError(f"{path}: not a readable MATLAB file ({err})") from None
    if "instance" not in mat:
        raise SceneError(f"{path}: no variable 'instance' (the (N, 6) points of VoteNet's extraction)")
    pts = np.asarray(mat["instance"])
    if pts.ndim != 2 or pts.shape[1] < 6 or not np.issubdtype(pts.dtype, np.number):
        raise SceneError(f"{path}: 'instance' must be an (N, >=6) array [x y z r g b], got {pts.shape} {pts.dtype}")
    pts = pts.astype(np.float64)
    if not np.isfinite(pts[:, :6]).all():
        raise SceneError(f"{path}: {int((~np.isfinite(pts[:, :6])).any(1).sum())} points hold NaN or inf")
    return pts[:, :3].astype(np.float32), np.clip(np.round(pts[:, 3:6] * 255), 0, 255).astype(np.uint8)


def read_labels(path: Path) -> Tuple[np.ndarray, int]:
    """boxes (K, 8) float32 of a ``label/<id>.txt`` (see the module docstring) and the number of lines dropped."""
    if not path.is_file():
        raise SceneError(f"{path}: file not found")
    boxes, dropped = [], 0
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 13:
            raise SceneError(f"{path}, line {number}: expected 13 fields 'class xmin ymin w2d h2d cx cy cz w l h "
                             f"ox oy', got {len(fields)}: {line.strip()!r}")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            values = [np.nan]
        if not np.isfinite(values).all():
            raise SceneError(f"{path}, line {number}: the 12 fields after the class must be finite numbers: "
                             f"{line.strip()!r}")
        if fields[0] not in _CLASS_IDS:
            dropped += 1
            continue
        cx, cy, cz, w, l, h, ox, oy = values[4:]
        boxes.append([cx, cy, cz, 2 * l, 2 * w, 2 * h, np.arctan2(oy, ox), _CLASS_IDS[fields[0]]])
    return np.array(boxes, dtype=np.float32).reshape(-1, 8), dropped


def read_calib(path: Path) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(Rtilt, K), each (3, 3) float64, of a ``calib/<id>.txt``, or None if the file is absent."""
    if not path.is_file():
        return None
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    mats = []
    for number, name in ((1, "Rtilt"), (2, "K")):
        try:
            values = [float(v) for v in lines[number - 1].replace(",", " ").split()]
        except (IndexError, ValueError):
            values = []
        if len(values) != 9:
            raise SceneError(f"{path}, line {number}: expected {name} as 9 numbers (column-major 3x3)")
        mats.append(np.array(values, dtype=np.float64).reshape(3, 3, order="F"))
    return mats[0], mats[1]


def convert_sample(depth_path: Path, out_root: Path) -> dict:
    """Write ``out_root/scenes/<id>`` from ``<trainval>/depth/<id>.mat`` and its label and calib files; returns the
    marker info (+ "skipped")."""
    depth_path = Path(depth_path)
    root, stem = depth_path.parent.parent, depth_path.stem

    def build(tmp: Path) -> dict:
        coord, color = read_points(depth_path)
        boxes, dropped = read_labels(root / "label" / f"{stem}.txt")
        calib = read_calib(root / "calib" / f"{stem}.txt")
        np.save(tmp / "coord.npy", coord)
        np.save(tmp / "color.npy", color)
        np.save(tmp / "boxes.npy", boxes)
        if calib is not None:
            np.save(tmp / "rtilt.npy", calib[0])
            np.save(tmp / "intrinsics.npy", calib[1])
        return {"sample": stem, "points": int(len(coord)), "boxes": int(len(boxes)), "dropped_objects": dropped,
                "calib": calib is not None}

    return build_folder(Path(out_root) / "scenes" / stem, build)


def find_samples(root: str | os.PathLike, limit: Optional[int] = None) -> Tuple[List[Path], Dict[str, List[str]]]:
    """(``depth/<id>.mat`` paths to convert, each once; {split: [ids]} in the order of ``<split>_data_idx.txt``).

    `limit`: the first `limit` ids of each split. Depth files that do not exist are listed too: their conversion fails.
    """
    root = Path(root)
    if not root.is_dir():
        raise SceneError(f"{root}: not a folder (expected VoteNet's sunrgbd_trainval/ folder)")
    splits: Dict[str, List[str]] = {}
    for split in SPLITS:
        path = root / f"{split}_data_idx.txt"
        if not path.is_file():
            raise SceneError(f"{path}: file not found (the {split} ids of VoteNet's extract_split.m)")
        ids = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                if not line.strip().isdigit():
                    raise SceneError(f"{path}, line {number}: expected one integer id, got {line.strip()!r}")
                ids.append(f"{int(line):06d}")
        splits[split] = ids[:limit] if limit is not None else ids
    stems = list(dict.fromkeys(s for ids in splits.values() for s in ids))
    return [root / "depth" / f"{s}.mat" for s in stems], splits


def write_splits(out: Path, splits: Dict[str, List[str]], converted: Sequence[str], keep_empty: bool = False) -> Dict[str, int]:
    """``out/splits/<split>.txt`` (the converted ids, in idx-file order; without the samples holding none of the 10
    classes unless `keep_empty`, as VoteNet's extraction skips them) and ``out/detection_classes.json``; counts."""
    done, counts = set(converted), {}
    (out / "splits").mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        kept = [s for s in ids if s in done]
        if len(kept) < len(ids):
            print(f"split {split}: {len(ids) - len(kept)} of {len(ids)} listed samples were not converted")
        if not keep_empty:
            empty = [s for s in kept if np.load(out / "scenes" / s / "boxes.npy").shape[0] == 0]
            kept = [s for s in kept if s not in set(empty)]
            if empty:
                print(f"split {split}: {len(empty)} samples without any of the {len(SUNRGBD_CLASSES)} classes left out "
                      "(as VoteNet; --keep-empty keeps them)")
        (out / "splits" / f"{split}.txt").write_text("".join(s + "\n" for s in kept))
        counts[split] = len(kept)
    write_json(out / "detection_classes.json", {"name": "sunrgbd10", "names": list(SUNRGBD_CLASSES)})
    return counts
