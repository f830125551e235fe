"""Detection class lists: the names (detection class index 0..C-1) and the value each class has in column 7 of a
scene's ``boxes.npy`` (K, 8) [cx, cy, cz, dx, dy, dz, heading, class]. Boxes of any other stored value are not
objects of the list (the synthetic world stores its segmentation ids, 3..11; ScanNet and SUN RGB-D the index).

Built in: ``scannet18`` (VoteNet's 18 ScanNet classes), ``sunrgbd10`` (its 10 SUN RGB-D classes), ``synthetic``
(the synthetic world's 9 object classes); or a ``detection_classes.json`` {"names": [...], "stored": [...]}
("stored" defaults to 0..C-1), given as the file or the folder that holds it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np

from ppkt.errors import UserError


@dataclass(frozen=True)
class DetectionClasses:
    name: str
    names: Tuple[str, ...]
    stored: Tuple[int, ...]  # stored[i]: the value of class i in boxes.npy column 7

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def map_boxes(self, raw: np.ndarray, source: str = "boxes") -> np.ndarray:
        """(K, 8) stored boxes -> (K', 8) float32 with column 7 the detection class index; other classes dropped."""
        raw = np.asarray(raw, dtype=np.float32)
        if raw.size == 0:
            return np.zeros((0, 8), np.float32)
        if raw.ndim != 2 or raw.shape[1] != 8:
            raise UserError(f"{source}: boxes must be (K, 8) [cx, cy, cz, dx, dy, dz, heading, class], got {raw.shape}")
        if not np.isfinite(raw).all():
            raise UserError(f"{source}: holds NaN or infinite box values")
        table = {v: i for i, v in enumerate(self.stored)}
        index = np.array([table.get(int(round(c)), -1) for c in raw[:, 7]], dtype=np.int64)
        out = raw[index >= 0].copy()
        out[:, 7] = index[index >= 0]
        return out


def _builtin() -> Dict[str, DetectionClasses]:
    from ppkt.data.class_lists import (SCANNET_DETECTION_CLASSES, SUNRGBD_CLASSES, SYNTHETIC_CLASSES,
                                       SYNTHETIC_STRUCTURE)

    objects = [i for i in range(len(SYNTHETIC_CLASSES)) if i not in SYNTHETIC_STRUCTURE]
    scannet = SCANNET_DETECTION_CLASSES
    return {"scannet18": DetectionClasses("scannet18", scannet, tuple(range(len(scannet)))),
            "sunrgbd10": DetectionClasses("sunrgbd10", SUNRGBD_CLASSES, tuple(range(len(SUNRGBD_CLASSES)))),
            "synthetic": DetectionClasses("synthetic", tuple(SYNTHETIC_CLASSES[i] for i in objects), tuple(objects))}


def get_detection_classes(name_or_path: Union[str, Path, DetectionClasses]) -> DetectionClasses:
    """A built-in list by name or a detection_classes.json (file or folder); UserError naming what is wrong."""
    if isinstance(name_or_path, DetectionClasses):
        return name_or_path
    builtin = _builtin()
    if str(name_or_path).lower() in builtin:
        return builtin[str(name_or_path).lower()]
    path = Path(name_or_path)
    path = path / "detection_classes.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"unknown detection classes {str(name_or_path)!r}: use one of {sorted(builtin)} or the path of "
                        "a detection_classes.json (or of the folder holding it)")
    try:
        table = json.loads(path.read_text())
        names = tuple(str(n) for n in table["names"])
        stored = tuple(int(v) for v in table.get("stored", range(len(names))))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a detection class table ({{\"names\": [...]}}): {err}") from None
    if not names or len(stored) != len(names) or len(set(stored)) != len(stored):
        raise UserError(f"{path}: needs a non-empty 'names' list and as many distinct 'stored' values")
    return DetectionClasses(str(table.get("name", path.stem)), names, stored)
