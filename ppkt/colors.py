"""Display colours of classes (PLYs, previews, confusion plots): task-neutral, below the tasks that draw them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def class_colors(num_classes: int, classes_json: str | Path | None = None) -> np.ndarray:
    """(C, 3) uint8 display colours: the "colors" of a classes.json (file or folder) when it has C of them, else
    matplotlib tab20 for up to 20 classes and evenly spaced hues beyond."""
    path = Path(classes_json) if classes_json else None
    if path is not None and path.is_dir():
        path = path / "classes.json"
    if path is not None and path.suffix == ".json" and path.is_file():
        try:
            colors = np.asarray(json.loads(path.read_text()).get("colors"), dtype=np.int64)
            if colors.shape == (num_classes, 3):
                return np.clip(colors, 0, 255).astype(np.uint8)
        except (ValueError, TypeError, AttributeError):
            pass  # no usable colours: fall back to the palette
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if num_classes <= 20 else "hsv"]
    pos = np.arange(num_classes) / (20 if num_classes <= 20 else num_classes)
    return (np.asarray(cmap(pos))[:, :3] * 255).round().astype(np.uint8)
