"""The ScanNet data-efficient benchmark's files, read as the benchmark distributes them (its download script's
`--data_efficient` option; Pointcept's configs read the same files):

- Limited Reconstructions: a text file of training scene names, one a line (`tasks/scenes/{1,5,10,20}.txt`);
- Limited Annotations: a `torch.save`d dict from scene name to the indices of its labelled points, into the scene's
  vertices (`tasks/points/points{20,50,100,200}`); every other point's label is ignored.

The points file is a pickle: it is read with `torch.load(..., weights_only=True)`, which rebuilds only tensors,
dicts, lists and the numpy arrays allowed here, never arbitrary objects.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ppkt.errors import UserError


def read_scenes_file(path: str | Path) -> List[str]:
    """The scene names of a Limited Reconstructions list (blank lines and `#` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.scenes_file: {path}: no such file")
    try:
        names = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    except UnicodeDecodeError:
        raise UserError(f"data.scenes_file: {path}: not a text file of scene names") from None
    names = [n for n in names if n]
    if not names:
        raise UserError(f"data.scenes_file: {path}: lists no scene")
    return names


def _numpy_globals() -> list:
    """What a pickle of numpy arrays may rebuild: the array reconstructor, ndarray, dtype and its classes."""
    import numpy.dtypes

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    dtype_classes = [getattr(numpy.dtypes, n) for n in dir(numpy.dtypes) if n.endswith("DType")]
    return [_reconstruct, np.ndarray, np.dtype, *dtype_classes]


def read_points_file(path: str | Path) -> Dict[str, np.ndarray]:
    """{scene name: (K,) int64 labelled point indices} of a Limited Annotations file."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.points_file: {path}: no such file")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        what = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "objects of other kinds")
        raise UserError(f"data.points_file: {path}: holds more than scene names and index arrays, so it is not read "
                        f"({what})") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is one clear error
        raise UserError(f"data.points_file: {path}: not a torch.save'd dict of point indices ({err})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"data.points_file: {path}: expected a dict from scene name to point indices, got "
                        f"{type(data).__name__}")
    out = {}
    for name, idx in data.items():
        arr = np.asarray(idx.numpy() if hasattr(idx, "numpy") else idx).reshape(-1)
        if not isinstance(name, str) or not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f"data.points_file: {path}: entry {name!r} is not a scene name with integer indices")
        out[name] = arr.astype(np.int64)
    return out


def check_named_scenes(names: Sequence[str], available: Sequence[str], what: str, path: Path | str) -> None:
    """UserError naming the file and the first scene of `names` that the dataset lacks."""
    missing = [n for n in names if n not in set(available)]
    if missing:
        raise UserError(f"{what}: {path} names {len(missing)} scene(s) the dataset's training split lacks, e.g. "
                        f"{missing[0]!r} ({len(available)} training scenes, e.g. {available[0]!r})")


def keep_points(segment: np.ndarray, indices: np.ndarray, scene: str, path: Path | str) -> np.ndarray:
    """segment (N,) with every label but those at `indices` set to -1 (ignore); an index beyond N is an error naming
    the scene and the file."""
    n = len(segment)
    bad = indices[(indices < 0) | (indices >= n)]
    if len(bad):
        raise UserError(f"data.points_file: {path}: scene {scene} has {n} points, but the file lists point index "
                        f"{int(bad[0])}")
    out = np.full_like(segment, -1)
    out[indices] = segment[indices]
    return out
