"""Surface normals of scene points: from a triangle mesh, or estimated from the points alone (PCA of neighbours)."""
from __future__ import annotations

from typing import Optional

import numpy as np


def mesh_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted mean of the adjacent face normals, unit length; (N, 3) float32 (0 for unused vertices).

    vertices: (N, 3) metres; faces: (F, 3) vertex indices, counter-clockwise seen from the outside.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 x area
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, f[:, k], face_n)
    return _unit(normals)


def estimate_normals(points: np.ndarray, k: int = 16, towards: Optional[np.ndarray] = None,
                     chunk: int = 200_000) -> np.ndarray:
    """Normal of each point = direction of least variance of its k nearest neighbours; (N, 3) float32.

    The sign is free: with `towards` (3,) (e.g. the room's centre) normals point to that side, else up (+z).
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    k = int(min(k, len(p)))
    if k < 3:
        raise ValueError(f"estimate_normals: need at least 3 points, got {len(p)}")
    tree = cKDTree(p)
    out = np.empty_like(p)
    for start in range(0, len(p), chunk):
        q = p[start: start + chunk]
        _, idx = tree.query(q, k=k)
        nb = p[idx] - p[idx].mean(axis=1, keepdims=True)  # (n, k, 3)
        cov = np.einsum("nki,nkj->nij", nb, nb)
        _, vecs = np.linalg.eigh(cov)  # eigenvalues ascending
        out[start: start + chunk] = vecs[:, :, 0]
    ref = (np.asarray(towards, dtype=np.float64)[None] - p) if towards is not None else np.array([[0.0, 0.0, 1.0]])
    flip = np.einsum("ni,ni->n", out, np.broadcast_to(ref, out.shape)) < 0
    out[flip] *= -1
    return _unit(out)


def _unit(n: np.ndarray) -> np.ndarray:
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 0, n / np.maximum(length, 1e-300), 0.0).astype(np.float32)
