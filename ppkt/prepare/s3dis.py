"""`ppkt prepare s3dis`: S3DIS rooms -> labelled scene folders (Pointcept layout) with the 13 classes.

Input: ``Stanford3dDataset_v1.2_Aligned_Version/Area_N/<room>/Annotations/<class>_<i>.txt``, one point a line,
``x y z r g b`` (or ``x y z r g b nx ny nz``). The class is the file name before the last ``_``; classes outside
the 13 (``stairs``) count as ``clutter``, as in the standard protocol. Lines that are not numbers (the
release has a few corrupt bytes) are skipped and counted.

Output ``<out>/Area_N/<room>/``: ``coord.npy`` (N, 3) float32 metres, ``color.npy`` (N, 3) uint8,
``segment.npy`` (N,) int32 (index in ppkt.data.scenes.S3DIS13), ``instance.npy`` (N,) int32 (one id per object
file), ``normal.npy`` (N, 3) float32 (from the files when they have them, else estimated from 16 neighbours,
pointing into the room). Area 5 is the validation area of ``ppkt finetune``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Tuple

import numpy as np

from ppkt.data.scenes import S3DIS13, SceneError
from ppkt.geometry.normals import estimate_normals
from ppkt.prepare.folders import build_folder

CLASS_IDS = {name: i for i, name in enumerate(S3DIS13.names)}
CLUTTER = CLASS_IDS["clutter"]
_OBJECT = re.compile(r"^(.+)_(\d+)\.txt$")


def read_points_txt(path: Path) -> Tuple[np.ndarray, int]:
    """(M, C) float64 of a whitespace-separated point file (C = 6 or 9) and the number of lines skipped as corrupt."""
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
        return data, 0
    except ValueError:
        pass  # a corrupt line: parse line by line below
    rows, bad, width = [], 0, None
    with open(path, "rb") as f:
        for raw in f:
            try:
                values = [float(v) for v in raw.split()]
            except ValueError:
                bad += 1
                continue
            if not values:
                continue
            if width is None:
                width = len(values)
            if len(values) != width:
                bad += 1
                continue
            rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, width or 6), bad


def convert_room(room_dir: Path, out_root: Path) -> dict:
    """Write ``out_root/<Area_N>/<room>`` from ``room_dir/Annotations``; returns the marker info (+ "skipped")."""
    room_dir = Path(room_dir)
    ann = room_dir / "Annotations"

    def build(tmp: Path) -> dict:
        objects = sorted(p for p in ann.glob("*.txt") if _OBJECT.match(p.name))
        if not objects:
            raise SceneError(f"{ann}: no <class>_<i>.txt object file")
        parts, labels, instances, bad_lines, as_clutter = [], [], [], 0, set()
        for k, path in enumerate(objects):
            data, bad = read_points_txt(path)
            bad_lines += bad
            if data.shape[1] not in (6, 9) or len(data) == 0:
                raise SceneError(f"{path}: expected lines of 6 (x y z r g b) or 9 numbers, got {data.shape[1]} "
                                 f"columns and {len(data)} points")
            name = _OBJECT.match(path.name).group(1)
            if name not in CLASS_IDS:
                as_clutter.add(name)
            parts.append(data)
            labels.append(np.full(len(data), CLASS_IDS.get(name, CLUTTER), dtype=np.int32))
            instances.append(np.full(len(data), k, dtype=np.int32))
        width = {p.shape[1] for p in parts}
        data = np.concatenate([p[:, :6] for p in parts]) if len(width) > 1 else np.concatenate(parts)
        coord = data[:, :3]
        if not np.isfinite(coord).all():
            raise SceneError(f"{ann}: coordinates hold NaN or inf")
        if data.shape[1] == 9:
            normal = data[:, 6:9].astype(np.float32)
        else:
            normal = estimate_normals(coord, k=16, towards=coord.mean(axis=0))
        np.save(tmp / "coord.npy", coord.astype(np.float32))
        np.save(tmp / "color.npy", np.clip(np.rint(data[:, 3:6]), 0, 255).astype(np.uint8))
        np.save(tmp / "segment.npy", np.concatenate(labels))
        np.save(tmp / "instance.npy", np.concatenate(instances))
        np.save(tmp / "normal.npy", normal)
        return {"room": f"{room_dir.parent.name}/{room_dir.name}", "points": int(len(coord)), "objects": len(objects),
                "corrupt_lines_skipped": bad_lines, "mapped_to_clutter": sorted(as_clutter),
                "normals": "file" if data.shape[1] == 9 else "estimated"}

    return build_folder(Path(out_root) / room_dir.parent.name / room_dir.name, build)


def find_rooms(root: str | os.PathLike) -> List[Path]:
    """Room folders ``Area_N/<room>`` (with an Annotations folder) under the S3DIS root, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise SceneError(f"{root}: not a folder (expected Stanford3dDataset_v1.2_Aligned_Version/)")
    rooms = sorted(p.parent for p in root.glob("Area_*/*/Annotations") if p.is_dir())
    if not rooms:
        raise SceneError(f"{root}: no room found (expected Area_N/<room>/Annotations/<class>_<i>.txt)")
    return rooms
