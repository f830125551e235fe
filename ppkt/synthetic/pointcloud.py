"""Labelled point clouds sampled from a scene's surfaces, and the Pointcept-style scene folder.

Sampling is a per-face grid (spacing <= ``spacing`` along both face axes, optionally jittered within its cell):
area-weighted, and every surface point has a sample within about 0.9 * spacing. Faces marked hidden in
``Scene.faces`` (bottoms on the floor, wall exteriors, faces touching other parts) are skipped. Point colours
use :func:`ppkt.synthetic.scene.surface_color`, i.e. the renderer's texture *and* shading (which has no view
term), so a point and the pixels seeing it agree in colour.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppkt.synthetic.scene import BOX, CYLINDER, Scene, surface_color

__all__ = ["PointCloud", "sample_surface", "save_scene", "load_scene", "SCENE_FILES", "OPTIONAL_SCENE_FILES"]

SCENE_FILES = ("coord", "color", "normal", "segment", "instance", "boxes")
OPTIONAL_SCENE_FILES = ("normal", "instance")  # not written by save_scene(compact=True)
FLOAT16_MAX_COORD = 8.0  # m: compact scenes store coord as float16 below it (error <= 2 mm), float32 otherwise


@dataclass
class PointCloud:
    """coord (N, 3) float32 m, color (N, 3) uint8, normal (N, 3) float32 unit, segment (N,) int16 class id
    (-1 ignore), instance (N,) int32 object index (-1 = floor / wall / ceiling)."""

    coord: np.ndarray
    color: np.ndarray
    normal: np.ndarray
    segment: np.ndarray
    instance: np.ndarray

    def __len__(self) -> int:
        return len(self.coord)


def _grid(n_u: np.ndarray, n_v: np.ndarray):
    """Row id and (i, j) cell indices of a batch of n_u x n_v grids laid end to end."""
    count = n_u * n_v
    row = np.repeat(np.arange(len(count)), count)
    local = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return row, local % n_u[row], local // n_u[row]


def _box_points(scene: Scene, spacing: float, jitter: float, rng: np.random.Generator):
    boxes = np.nonzero(scene.kind == BOX)[0]
    prim, face = np.nonzero(scene.faces[boxes])
    prim = boxes[prim]
    axis, sign = face // 2, np.where(face % 2 == 0, -1.0, 1.0)
    ua, va = np.array([1, 0, 0])[axis], np.array([2, 2, 1])[axis]
    size = scene.size[prim]
    su, sv = size[np.arange(len(prim)), ua], size[np.arange(len(prim)), va]
    nu = np.maximum(np.ceil(su / spacing), 1).astype(np.int64)
    nv = np.maximum(np.ceil(sv / spacing), 1).astype(np.int64)
    row, i, j = _grid(nu, nv)
    fu = (i + 0.5 + jitter * rng.uniform(-0.5, 0.5, len(row))) / nu[row] - 0.5
    fv = (j + 0.5 + jitter * rng.uniform(-0.5, 0.5, len(row))) / nv[row] - 0.5
    local = np.zeros((len(row), 3))
    n_local = np.zeros((len(row), 3))
    ar = np.arange(len(row))
    local[ar, axis[row]] = sign[row] * size[row, axis[row]] / 2
    local[ar, ua[row]] = fu * su[row]
    local[ar, va[row]] = fv * sv[row]
    n_local[ar, axis[row]] = sign[row]
    p = prim[row]
    c, s = np.cos(scene.heading[p]), np.sin(scene.heading[p])
    rot = lambda v: np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1], v[:, 2]], 1)  # noqa: E731
    return p, rot(local) + scene.center[p], rot(n_local)


def sample_surface(scene: Scene, spacing: float = 0.02, jitter: float = 0.25,
                   rng: np.random.Generator | None = None) -> PointCloud:
    """Sample the visible faces of all primitives on a grid of cell size <= ``spacing`` m.

    jitter: each point moves up to jitter / 2 of its cell from the cell centre (0 = regular grid; 0.25 keeps
    every surface point within 0.89 * spacing of a sample). rng: for jitter and cylinder phases (default seed 0).
    """
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0 m, got {spacing!r}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    prim, coord, normal = _box_points(scene, spacing, jitter, rng)
    cyl_prims, cyl_pts, cyl_nrm = [], [], []
    for p in np.nonzero(scene.kind == CYLINDER)[0]:
        pts, nrm = _one_cylinder(scene, p, spacing, rng)
        cyl_prims.append(np.full(len(pts), p))
        cyl_pts.append(pts)
        cyl_nrm.append(nrm)
    if cyl_prims:
        prim = np.concatenate([prim] + cyl_prims)
        coord = np.concatenate([coord] + cyl_pts)
        normal = np.concatenate([normal] + cyl_nrm)
    color = np.empty((len(prim), 3), np.uint8)
    for a in range(0, len(prim), 1 << 18):   # chunks bound the temporaries of the texture evaluation
        sl = slice(a, a + (1 << 18))
        color[sl] = surface_color(scene, prim[sl], coord[sl], normal[sl])
    return PointCloud(coord.astype(np.float32), color, normal.astype(np.float32),
                      scene.label[prim].astype(np.int16), scene.instance[prim].astype(np.int32))


def _one_cylinder(scene: Scene, p: int, spacing: float, rng: np.random.Generator):
    """Side grid and cap rings of cylinder ``p`` -> points (n, 3), normals (n, 3)."""
    r, h = scene.size[p, 0] / 2, scene.size[p, 2]
    c = scene.center[p]
    nt, nz = max(int(np.ceil(2 * np.pi * r / spacing)), 3), max(int(np.ceil(h / spacing)), 1)
    th = (np.arange(nt) + 0.5) / nt * 2 * np.pi + rng.uniform(0, 2 * np.pi)
    z = (np.arange(nz) + 0.5) / nz * h - h / 2
    th, z = np.repeat(th, nz), np.tile(z, nt)
    n = np.stack([np.cos(th), np.sin(th), np.zeros_like(th)], 1)
    pts, nrm = [np.stack([r * n[:, 0], r * n[:, 1], z], 1)], [n]
    nr = max(int(np.ceil(r / spacing)), 1)
    for cap, up in ((4, -1.0), (5, 1.0)):
        if not scene.faces[p, cap]:
            continue
        for k in range(nr):   # ring k at radius (k + 0.5) r / nr; arcs <= spacing at the ring's outer edge
            m = max(int(np.ceil(2 * np.pi * (k + 1) * r / nr / spacing)), 1)
            a = (np.arange(m) + 0.5) / m * 2 * np.pi + rng.uniform(0, 2 * np.pi)
            rk = (k + 0.5) * r / nr
            pts.append(np.stack([rk * np.cos(a), rk * np.sin(a), np.full(m, up * h / 2)], 1))
            nrm.append(np.tile([0.0, 0.0, up], (m, 1)))
    return np.concatenate(pts) + c, np.concatenate(nrm)


def save_scene(folder: str | os.PathLike, pc: PointCloud, boxes: np.ndarray, compact: bool = False) -> Path:
    """Write ``coord/color/normal/segment/instance/boxes.npy`` (Pointcept layout) into ``folder``.

    compact: write only what semantic segmentation reads, in the smallest types that hold it exactly enough:
    ``coord`` float16 (rounding error <= 2 mm while every |coordinate| < 8 m; float32 otherwise), ``color`` uint8,
    ``segment`` int8, ``boxes`` float32; no ``normal`` or ``instance`` (10 bytes a point instead of 33). Readers
    that cast on load (``ppkt.data.scenes.load_scene``, :func:`load_scene`) read both forms.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 8)
    if compact:
        coord = pc.coord.astype(np.float16 if _fits_float16(pc.coord) else np.float32)
        arrays = {"coord": coord, "color": pc.color.astype(np.uint8), "segment": pc.segment.astype(np.int8),
                  "boxes": boxes}
    else:
        arrays = {"coord": pc.coord.astype(np.float32), "color": pc.color.astype(np.uint8),
                  "normal": pc.normal.astype(np.float32), "segment": pc.segment.astype(np.int16),
                  "instance": pc.instance.astype(np.int32), "boxes": boxes}
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    return folder


def _fits_float16(coord: np.ndarray) -> bool:
    """float16 keeps ``coord`` (m) within 2 mm: its spacing is <= 2**-8 m (3.9 mm) below 8 m."""
    return coord.size == 0 or float(np.abs(coord).max()) < FLOAT16_MAX_COORD


def load_scene(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a scene folder written by :func:`save_scene` -> {name: array} for the names in SCENE_FILES it holds
    (a compact scene has no normal or instance), as stored (a compact ``coord`` is float16)."""
    folder = Path(folder)
    missing = [n for n in SCENE_FILES if n not in OPTIONAL_SCENE_FILES and not (folder / f"{n}.npy").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(m + '.npy' for m in missing)}")
    return {n: np.load(folder / f"{n}.npy") for n in SCENE_FILES if (folder / f"{n}.npy").is_file()}
