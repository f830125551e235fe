"""A user's scan as points: read from a PLY (cloud or mesh), a scene folder, a .npy / .npz of points, or a folder of
RGB-D frames (fused into one cloud), then checked for units and the up axis before a model reads it.

Units: metres, z up (as every ppkt model is trained); colour 0-255 RGB.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ppkt.errors import UserError

MAX_EXTENT = 1000.0  # metres: a scan larger than this is almost surely not in metres
# an axis is taken for the floor's when its densest 5 cm slab holds this many times the points of z's densest slab (a
# room's floor has more points than any one wall unless the room is a long corridor: then --no-up-check)
UP_MARGIN = 1.3
# rotations taking each axis to +z (quarter or half turns about x or y)
UP_ROTATIONS = {"z": np.eye(3), "-z": np.diag([1.0, -1.0, -1.0]),
                "y": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]), "-y": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),
                "x": np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]]), "-x": np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])}


@dataclass
class Scan:
    """coord (N, 3) float32 metres; color (N, 3) float32 0-255 or None; normal (N, 3) float32 or None."""

    name: str
    coord: np.ndarray
    color: Optional[np.ndarray]
    normal: Optional[np.ndarray]
    source: str
    kind: str  # "ply", "mesh", "scene folder", "npy", "npz", "frames"
    up_hint: Optional[np.ndarray] = None  # frames: the mean "up" of the cameras (their -y axis), a unit (3,) vector

    def describe(self) -> str:
        have = [k for k in ("color", "normal") if getattr(self, k) is not None]
        lo, hi = self.coord.min(0), self.coord.max(0)
        return (f"{self.source}: {self.kind}, {len(self.coord)} points ({', '.join(have) or 'no colour, no normals'}); "
                f"extent {' x '.join(f'{v:.2f}' for v in hi - lo)} m")


def _checked(name: str, coord, color, normal, source: str, kind: str) -> Scan:
    coord = np.asarray(coord, dtype=np.float32)
    if coord.ndim != 2 or coord.shape[1] != 3 or len(coord) == 0:
        raise UserError(f"{source}: expected (N, 3) point coordinates with N >= 1, got shape {coord.shape}")
    if not np.isfinite(coord).all():
        bad = int((~np.isfinite(coord)).any(1).sum())
        raise UserError(f"{source}: {bad} of {len(coord)} points have NaN or infinite coordinates")
    for what, values in (("colour", color), ("normals", normal)):
        if values is not None and np.shape(values) != coord.shape:
            raise UserError(f"{source}: {what} of shape {np.shape(values)} for {len(coord)} points")
    if color is not None:
        color = np.asarray(color, dtype=np.float32)
        if color.size and color.max() <= 1.0:  # colours stored as 0-1 floats
            color = color * 255.0
        color = np.clip(color, 0.0, 255.0)
    normal = None if normal is None else np.asarray(normal, dtype=np.float32)
    return Scan(name, coord, color, normal, source, kind)


def read_ply_scan(path: Path) -> Scan:
    from ppkt.data.ply import read_ply

    vertex, face = read_ply(path)
    have = {p.name for p in vertex.properties}
    if not {"x", "y", "z"} <= have:
        raise UserError(f"{path}: vertex properties x, y, z missing (has {sorted(have)})")
    stack = lambda names: np.stack([np.asarray(vertex[n], dtype=np.float64) for n in names], 1)  # noqa: E731
    color = next((stack(c) for c in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green",
                                                                               "diffuse_blue")) if set(c) <= have), None)
    normal = stack(("nx", "ny", "nz")) if {"nx", "ny", "nz"} <= have else None
    return _checked(path.stem, stack(("x", "y", "z")), color, normal, str(path),
                    "mesh" if face is not None and len(face.data) else "ply")


def read_array_scan(path: Path) -> Scan:
    """.npy: (N, 3) xyz, (N, 6) xyz rgb or (N, 9) xyz rgb normal; .npz: arrays coord (or xyz / points), color (or rgb),
    normal (optional each but coord)."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one clear error
        raise UserError(f"{path}: cannot read ({err})") from None
    if path.suffix == ".npz":
        keys = set(data.files)
        pick = lambda *names: next((data[n] for n in names if n in keys), None)  # noqa: E731
        coord = pick("coord", "xyz", "points")
        if coord is None:
            raise UserError(f"{path}: needs an array named coord (or xyz, points); has {sorted(keys)}")
        return _checked(path.stem, coord, pick("color", "rgb", "colors"), pick("normal", "normals"), str(path), "npz")
    if data.ndim != 2 or data.shape[1] not in (3, 6, 9):
        raise UserError(f"{path}: expected (N, 3) xyz, (N, 6) xyz rgb or (N, 9) xyz rgb normal, got {data.shape}")
    return _checked(path.stem, data[:, :3], data[:, 3:6] if data.shape[1] >= 6 else None,
                    data[:, 6:9] if data.shape[1] == 9 else None, str(path), "npy")


def read_scene_scan(folder: Path) -> Scan:
    from ppkt.data.scenes import load_array

    load = lambda name: load_array(folder / f"{name}.npy") if (folder / f"{name}.npy").is_file() else None  # noqa: E731
    return _checked(folder.name, load("coord"), load("color"), load("normal"), str(folder), "scene folder")


def fuse_frames(folder: Path, voxel_size: float, progress: bool = True) -> Scan:
    """Every frame of an RGB-D folder (either layout `ppkt frames` reads) back-projected with its pose into one cloud,
    one point per `voxel_size` voxel (the mean position and colour of its points)."""
    import torch

    from ppkt.data.frames import open_frame_folder
    from ppkt.geometry.backproject import backproject
    from ppkt.geometry.voxelize import voxelize
    from ppkt.progress import Progress

    frames = open_frame_folder(folder)
    if not frames.has_poses:
        raise UserError(f"{folder}: the frames have no poses; fusing them into one scan needs a pose per frame")
    points, colors, ups = [], [], []
    with Progress(len(frames), f"fuse {folder.name}", unit="frame", enabled=progress) as bar:
        for frame in frames:
            ups.append(-frame.pose[:3, 1])  # a camera's y axis points down in its image: held upright, -y is up
            bp = backproject(torch.from_numpy(frame.depth), torch.from_numpy(frame.intrinsics),
                             torch.from_numpy(frame.color), torch.from_numpy(frame.pose))
            points.append(bp.points.double())
            colors.append(bp.features.double())
            bar.update(1)
    coord, color = torch.cat(points), torch.cat(colors)
    vox = voxelize(coord, voxel_size)
    scan = _checked(folder.name, vox.mean(coord).numpy(), vox.mean(color).numpy(), None, str(folder), "frames")
    up = np.mean(ups, axis=0)
    scan.up_hint = up / max(np.linalg.norm(up), 1e-12)
    return scan


def read_scan(path: str | Path, voxel_size: float, progress: bool = True) -> Scan:
    """The points of any input `ppkt predict` takes (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "coord.npy").is_file():
            return read_scene_scan(path)
        from ppkt.data.frames import FrameError

        try:
            return fuse_frames(path, voxel_size, progress)
        except FrameError as err:
            raise UserError(f"{path}: neither a scene folder (coord.npy) nor a folder of RGB-D frames ({err})") from None
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return read_ply_scan(path)
    if suffix in (".npy", ".npz"):
        return read_array_scan(path)
    raise UserError(f"{path}: unknown input kind {suffix!r}; give a .ply, .npy, .npz, a scene folder (coord.npy) or "
                    "a folder of RGB-D frames")


# ------------------------------------------------------------------------------------------- units and up axis
def up_axis_scores(coord: np.ndarray, slab: float = 0.05) -> np.ndarray:
    """Per axis, the largest share of the points within one `slab`-metre slab across it: indoor scans have floors and
    ceilings, so the up axis has the largest (sampled on at most 200k points)."""
    if len(coord) > 200_000:
        coord = coord[np.random.default_rng(0).choice(len(coord), 200_000, replace=False)]
    scores = []
    for a in range(3):
        v = coord[:, a]
        bins = max(1, int(np.ceil((v.max() - v.min()) / slab)))
        scores.append(np.histogram(v, bins=bins)[0].max() / len(v))
    return np.array(scores)


def to_model_frame(scan: Scan, scale: float = 1.0, up: str = "z", check_up: bool = True) -> Scan:
    """The scan in metres with z up: coordinates x `scale`, the `up` axis turned to +z (a rotation, so handedness
    stays). Refused: an extent over MAX_EXTENT metres (wrong units: the fix is --scale) and, when `check_up`, a scan
    whose floor-and-ceiling axis (`up_axis_scores`) is clearly another axis than `up` (the fix is --up)."""
    if up not in UP_ROTATIONS:
        raise UserError(f"--up: one of {', '.join(UP_ROTATIONS)}, got {up!r}")
    if not scale > 0:
        raise UserError(f"--scale: must be > 0, got {scale}")
    coord = scan.coord.astype(np.float64) * scale
    extent = coord.max(0) - coord.min(0)
    if extent.max() > MAX_EXTENT:
        raise UserError(f"{scan.source}: the scan spans {extent.max():.0f} units; ppkt models read metres. If it is in "
                        f"millimetres, pass --scale 0.001 (centimetres: --scale 0.01)")
    R = UP_ROTATIONS[up]
    coord = coord @ R.T
    normal = None if scan.normal is None else scan.normal @ R.T
    if check_up and scan.up_hint is not None:  # frames: the cameras say where up is
        hint = R @ scan.up_hint
        if hint[2] < np.cos(np.radians(30)):
            axis = int(np.argmax(np.abs(scan.up_hint)))
            name = ("-" if scan.up_hint[axis] < 0 else "") + "xyz"[axis]
            raise UserError(f"{scan.source}: the cameras were held with their up along {name} of the scan's frame "
                            f"({np.degrees(np.arccos(np.clip(hint[2], -1, 1))):.0f} degrees from the z axis ppkt models "
                            f"read as up): pass --up={name}, or --no-up-check to predict as it is")
    elif check_up:
        scores = up_axis_scores(coord)
        best = int(np.argmax(scores))
        if best != 2 and scores[best] > UP_MARGIN * scores[2]:
            names = "xyz"
            raise UserError(f"{scan.source}: its floor and ceiling lie across the {names[best]} axis ({100 * scores[best]:.0f} % "
                            f"of the points in one 5 cm slab, against {100 * scores[2]:.0f} % across z); ppkt models "
                            f"read z up: pass --up={names[best]} (or --up=-{names[best]}), or --no-up-check to predict as it is")
    return Scan(scan.name, coord.astype(np.float32), scan.color, normal, scan.source, scan.kind,
                None if scan.up_hint is None else R @ scan.up_hint)
