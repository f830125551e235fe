"""`ppkt prepare scannet-scenes`: ScanNet scans -> labelled scene folders (Pointcept layout) and detection boxes.

Input per scan (the official download): ``<scan>_vh_clean_2.ply`` (mesh with vertex colours),
``<scan>_vh_clean_2.labels.ply`` (NYU40 id per vertex, property ``label``), ``<scan>_vh_clean_2.0.010000.segs.json``
(``segIndices``: over-segment of each vertex), ``<scan>.aggregation.json`` (``segGroups``: objects as lists of
segments) and ``<scan>.txt`` (``axisAlignment = 16 numbers``, row-major 4x4). Test scans without labels get
ignore labels.

Output ``<out>/scenes/<scan>/``, every array in the axis-aligned frame (z up; the mesh frame is
``axis_align.npy``^-1 of it): ``coord.npy`` (N, 3) float32 metres, ``color.npy`` (N, 3) uint8, ``normal.npy`` (N, 3)
float32 (mesh vertex normals), ``segment20.npy`` (N,) int32 (NYU40 -> ScanNet-20, -1 ignore), ``instance.npy``
(N,) int32 (aggregation objectId, -1 none), ``boxes.npy`` (K, 8) float32 [cx, cy, cz, dx, dy, dz, heading = 0,
class] for the objects of the 18 detection classes (class = index in DETECTION_CLASSES, the object's majority
NYU40 label), ``axis_align.npy`` (4, 4). ``<out>/splits/<name>.txt`` from ``--split name=FILE``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ppkt.data.class_lists import SCANNET20_NYU40, SCANNET_DETECTION_CLASSES, SCANNET_DETECTION_NYU40
from ppkt.data.scenes import SCANNET20, SceneError
from ppkt.errors import UserError
from ppkt.geometry.normals import mesh_vertex_normals
from ppkt.prepare.folders import build_folder

#: NYU40 ids of the ScanNet-20 classes, in the order of ppkt.data.scenes.SCANNET20 (all other ids: ignore)
#: the 18 ScanNet detection classes (VoteNet's benchmark) and their NYU40 ids
DETECTION_CLASSES, DETECTION_NYU40 = SCANNET_DETECTION_CLASSES, SCANNET_DETECTION_NYU40
assert len(SCANNET20_NYU40) == SCANNET20.num_classes and len(DETECTION_NYU40) == len(DETECTION_CLASSES)


def nyu40_lookup(nyu40_labels: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """NYU40 id (N,) -> index of the id in `ids`, or -1; int64."""
    table = np.full(max(ids) + 1, -1, dtype=np.int64)
    table[list(ids)] = np.arange(len(ids))
    labels = np.asarray(nyu40_labels, dtype=np.int64)
    inside = (labels >= 0) & (labels < len(table))
    return np.where(inside, table[np.clip(labels, 0, len(table) - 1)], -1)


# ---------------------------------------------------------------------------------------------- reading
def scan_files(scan_dir: Path) -> Dict[str, Path]:
    scan = scan_dir.name
    return {"mesh": scan_dir / f"{scan}_vh_clean_2.ply", "labels": scan_dir / f"{scan}_vh_clean_2.labels.ply",
            "segs": scan_dir / f"{scan}_vh_clean_2.0.010000.segs.json", "aggregation": scan_dir / f"{scan}.aggregation.json",
            "meta": scan_dir / f"{scan}.txt"}


def read_ply(path: Path):
    """(vertex element, face element or None) of a PLY file (`ppkt.data.ply.read_ply`); SceneError naming the file."""
    from ppkt.data.ply import read_ply as read

    try:
        return read(path)
    except UserError as err:
        raise SceneError(str(err)) from None


def _props(element, names: Sequence[str], path: Path) -> np.ndarray:
    have = [p.name for p in element.properties]
    missing = [n for n in names if n not in have]
    if missing:
        raise SceneError(f"{path}: vertex properties {missing} missing (has {have})")
    return np.stack([np.asarray(element[n]) for n in names], axis=1)


def read_mesh(path: Path):
    """vertices (N, 3) float64, colors (N, 3) uint8, faces (F, 3) int64 of a ScanNet _vh_clean_2.ply."""
    vertex, face = read_ply(path)
    xyz = _props(vertex, ("x", "y", "z"), path).astype(np.float64)
    rgb = _props(vertex, ("red", "green", "blue"), path).astype(np.uint8)
    if face is None:
        raise SceneError(f"{path}: the mesh has no faces (needed for the normals)")
    key = "vertex_indices" if "vertex_indices" in [p.name for p in face.properties] else face.properties[0].name
    faces = np.asarray(np.stack(face[key]), dtype=np.int64) if len(face[key]) else np.zeros((0, 3), np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and (faces.min() < 0 or faces.max() >= len(xyz))):
        raise SceneError(f"{path}: faces must be triangles indexing the {len(xyz)} vertices")
    if not np.isfinite(xyz).all():
        raise SceneError(f"{path}: vertex coordinates hold NaN or inf")
    return xyz, rgb, faces


def read_axis_alignment(path: Path) -> Optional[np.ndarray]:
    """The 4x4 ``axisAlignment`` of a scan's meta .txt, or None if the file or the line is absent."""
    if not path.is_file():
        return None
    m = re.search(r"^\s*axisAlignment\s*=\s*(.+)$", path.read_text(errors="replace"), flags=re.MULTILINE)
    if m is None:
        return None
    try:
        values = [float(v) for v in m.group(1).split()]
    except ValueError:
        values = []
    if len(values) != 16 or not np.isfinite(values).all():
        raise SceneError(f"{path}: axisAlignment must be 16 numbers (a row-major 4x4), got {m.group(1)!r}")
    return np.array(values, dtype=np.float64).reshape(4, 4)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SceneError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SceneError(f"{path}: not valid JSON ({err})") from None


def read_instances(segs_path: Path, aggregation_path: Path, num_vertices: int) -> np.ndarray:
    """Object id of every vertex (N,) int64 from the over-segmentation and the aggregation; -1 outside objects."""
    segs = _read_json(segs_path).get("segIndices")
    if not isinstance(segs, list) or len(segs) != num_vertices:
        raise SceneError(f"{segs_path}: segIndices must list one segment per vertex ({num_vertices}), "
                         f"got {len(segs) if isinstance(segs, list) else type(segs).__name__}")
    groups = _read_json(aggregation_path).get("segGroups")
    if not isinstance(groups, list):
        raise SceneError(f"{aggregation_path}: no segGroups list")
    seg_ids = np.asarray(segs, dtype=np.int64)
    seg_to_object: Dict[int, int] = {}
    for g in groups:
        obj = int(g.get("objectId", g.get("id", -1)))
        for s in g.get("segments", []):
            seg_to_object[int(s)] = obj
    keys = np.array(sorted(seg_to_object), dtype=np.int64)
    values = np.array([seg_to_object[k] for k in keys], dtype=np.int64)
    instance = np.full(num_vertices, -1, dtype=np.int64)
    if len(keys):
        pos = np.clip(np.searchsorted(keys, seg_ids), 0, len(keys) - 1)
        hit = keys[pos] == seg_ids
        instance[hit] = values[pos[hit]]
    return instance


def instance_boxes(coord: np.ndarray, instance: np.ndarray, nyu40: np.ndarray) -> np.ndarray:
    """(K, 8) float32 [cx, cy, cz, dx, dy, dz, 0, class] axis-aligned boxes of the detection-class objects."""
    boxes = []
    for obj in np.unique(instance[instance >= 0]):
        mask = instance == obj
        ids, counts = np.unique(nyu40[mask], return_counts=True)
        cls = nyu40_lookup(ids[np.argmax(counts)][None], DETECTION_NYU40)[0]  # majority NYU40 label
        if cls < 0:
            continue
        lo, hi = coord[mask].min(axis=0), coord[mask].max(axis=0)
        boxes.append([*((lo + hi) / 2), *(hi - lo), 0.0, float(cls)])
    return np.array(boxes, dtype=np.float32).reshape(-1, 8)


# ---------------------------------------------------------------------------------------------- converting
def convert_scan(scan_dir: Path, out_root: Path) -> dict:
    """Write ``out_root/scenes/<scan>`` (see the module docstring); returns the marker info (+ "skipped")."""
    files = scan_files(Path(scan_dir))

    def build(tmp: Path) -> dict:
        xyz, rgb, faces = read_mesh(files["mesh"])
        n = len(xyz)
        align = read_axis_alignment(files["meta"])
        A = np.eye(4) if align is None else align
        coord = xyz @ A[:3, :3].T + A[:3, 3]
        normal = mesh_vertex_normals(xyz, faces) @ A[:3, :3].T.astype(np.float32)
        labelled = files["labels"].is_file()
        if labelled:
            nyu40 = _props(read_ply(files["labels"])[0], ("label",), files["labels"])[:, 0].astype(np.int64)
            if len(nyu40) != n:
                raise SceneError(f"{files['labels']}: {len(nyu40)} vertices, but {files['mesh']} has {n}")
            has_instances = files["segs"].is_file() and files["aggregation"].is_file()
            instance = read_instances(files["segs"], files["aggregation"], n) if has_instances else np.full(n, -1)
        else:
            nyu40, instance = np.zeros(n, dtype=np.int64), np.full(n, -1)
        boxes = instance_boxes(coord, instance, nyu40)
        np.save(tmp / "coord.npy", coord.astype(np.float32))
        np.save(tmp / "color.npy", rgb)
        np.save(tmp / "normal.npy", normal.astype(np.float32))
        np.save(tmp / "segment20.npy", nyu40_lookup(nyu40, SCANNET20_NYU40).astype(np.int32) if labelled
                else np.full(n, -1, dtype=np.int32))
        np.save(tmp / "instance.npy", instance.astype(np.int32))
        np.save(tmp / "boxes.npy", boxes)
        np.save(tmp / "axis_align.npy", A)
        return {"scan": scan_dir.name, "points": n, "labelled": labelled, "objects": int(len(np.unique(instance[instance >= 0]))),
                "boxes": int(len(boxes)), "axis_aligned": align is not None}

    return build_folder(Path(out_root) / "scenes" / scan_dir.name, build)


def find_scans(scans: str | os.PathLike) -> List[Path]:
    """Scan folders (holding ``<name>_vh_clean_2.ply``) at or below `scans`, sorted."""
    scans = Path(scans)
    if not scans.is_dir():
        raise SceneError(f"{scans}: not a folder (expected ScanNet's scans/ folder)")
    found = sorted(p.parent for p in scans.rglob("*_vh_clean_2.ply") if p.name == f"{p.parent.name}_vh_clean_2.ply")
    if not found:
        raise SceneError(f"{scans}: no scan found below it (expected <scan>/<scan>_vh_clean_2.ply)")
    return found


def write_splits(out: Path, splits: Dict[str, Path], converted: Sequence[str]) -> Dict[str, int]:
    """``out/splits/<name>.txt`` from ScanNet split files, keeping the scans that were converted; counts."""
    done, counts = set(converted), {}
    for name, path in splits.items():
        path = Path(path)
        if not path.is_file():
            raise SceneError(f"split file {path} (for split {name!r}) not found")
        listed = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        kept = [s for s in listed if s in done]
        (out / "splits").mkdir(parents=True, exist_ok=True)
        (out / "splits" / f"{name}.txt").write_text("".join(s + "\n" for s in kept))
        counts[name] = len(kept)
        if len(kept) < len(listed):
            print(f"split {name}: {len(listed) - len(kept)} of {len(listed)} listed scans were not converted")
    return counts
