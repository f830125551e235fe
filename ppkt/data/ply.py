"""PLY files in and out (plyfile): point clouds and meshes of any tool, binary or ASCII.

`read_ply` returns the vertex element and the face element (or None); `write_ply` writes a binary little-endian
point cloud, atomically: float x y z (metres), uchar red green blue, then int32 properties.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ppkt.atomic import atomic_path
from ppkt.errors import UserError


def read_ply(path: Path):
    """(vertex element, face element or None) of a PLY file; UserError naming the file."""
    from plyfile import PlyData, PlyElementParseError, PlyHeaderParseError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        ply = PlyData.read(str(path))
    except (PlyHeaderParseError, PlyElementParseError, ValueError, EOFError, OSError, IndexError) as err:
        raise UserError(f"{path}: not a readable PLY file ({err})") from None
    names = [e.name for e in ply.elements]
    if "vertex" not in names:
        raise UserError(f"{path}: PLY file has no vertex element (elements: {names})")
    return ply["vertex"], (ply["face"] if "face" in names else None)


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray, comment: str = "written by ppkt",
              **int_props: np.ndarray) -> Path:
    """Binary little-endian PLY point cloud: float x y z (metres), uchar red green blue, then int32 properties."""
    from plyfile import PlyData, PlyElement

    xyz, rgb = np.asarray(xyz), np.asarray(rgb)
    n = xyz.shape[0]
    if xyz.shape != (n, 3) or rgb.shape != (n, 3) or any(np.shape(v) != (n,) for v in int_props.values()):
        raise ValueError(f"write_ply: need xyz (N, 3), rgb (N, 3) and (N,) properties, got {xyz.shape}, {rgb.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields += [(k, "<i4") for k in int_props]
    rows = np.empty(n, dtype=fields)
    for i, axis in enumerate("xyz"):
        rows[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        rows[channel] = rgb[:, i]
    for k, v in int_props.items():
        rows[k] = v
    ply = PlyData([PlyElement.describe(rows, "vertex")], text=False, byte_order="<", comments=[comment])
    with atomic_path(path) as tmp:
        ply.write(str(tmp))
    return Path(path)
