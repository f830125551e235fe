"""Floors no trained network may miss: non-learned and simple learned per-point classifiers.

- `LookupTable`: the majority class of each (colour, height) cell: colour quantised to `color_bins` bins a channel
  (16: bins of 16 grey levels), height to `height_step` metres (0.1). A test point whose cell no training point
  fell in takes the majority of its colour cell, else of its height cell, else the overall majority.
- `NearestNeighbours`: the majority class of the k nearest training points in (r, g, b) / 255 and z / `height_scale`
  (scipy's cKDTree; ties: the smallest class id).

Both are fitted on the labelled points a fine-tuning run would train on (the same scenes and the same limited
points), training clouds grid-sampled at `FIT_SPACING` (the majority label per cell), and predict every point of
the scenes they are scored on, as the networks are scored (`score_floor`). Units: metres, colour 0-255.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

FIT_SPACING = 0.08  # metres: the grid on which the training points of a floor are sampled (majority label per cell)

Cloud = Tuple[np.ndarray, np.ndarray, np.ndarray]  # coord (N, 3) metres, color (N, 3) 0-255, labels (N,) (-1 ignore)


def _majority(keys: np.ndarray, labels: np.ndarray, num_classes: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique keys (U,), majority class of each (U,), index of each key's first element (U,)); ties go to the
    smallest class id."""
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    counts = np.zeros((len(uniq), num_classes), np.int64)
    np.add.at(counts, (inverse, labels), 1)
    return uniq, counts.argmax(1), first


def _lookup(table: Tuple[np.ndarray, np.ndarray], keys: np.ndarray) -> np.ndarray:
    """The table's class of each key, -1 where the key is not in the table."""
    uniq, cls = table
    pos = np.clip(np.searchsorted(uniq, keys), 0, max(len(uniq) - 1, 0))
    found = (uniq[pos] == keys) if len(uniq) else np.zeros(len(keys), bool)
    return np.where(found, cls[pos] if len(uniq) else -1, -1)


def grid_majority(coord: np.ndarray, color: np.ndarray, labels: np.ndarray, spacing: float, num_classes: int) -> Cloud:
    """The labelled points sampled on a `spacing` grid: per occupied cell its first point's coord and colour and the
    majority label of its points."""
    keep = labels >= 0
    coord, color, labels = coord[keep], color[keep], labels[keep]
    if not len(labels):
        return coord, color, labels
    cell = np.floor(coord / spacing).astype(np.int64)
    cell -= cell.min(0)
    span = cell.max(0) + 1
    key = (cell[:, 0] * span[1] + cell[:, 1]) * span[2] + cell[:, 2]
    _, majority, first = _majority(key, labels, num_classes)
    return coord[first], color[first], majority


@dataclass
class LookupTable:
    """Majority class per (colour, height) cell, with colour-only, height-only and overall fallbacks."""

    num_classes: int
    color_bins: int = 16
    height_step: float = 0.10
    tables: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    fallback: int = 0

    def _keys(self, coord: np.ndarray, color: np.ndarray) -> Dict[str, np.ndarray]:
        b = self.color_bins
        q = np.clip((np.asarray(color, np.float64) * b / 256.0).astype(np.int64), 0, b - 1)
        colour = (q[:, 0] * b + q[:, 1]) * b + q[:, 2]
        height = np.floor(np.asarray(coord, np.float64)[:, 2] / self.height_step).astype(np.int64) + (1 << 20)
        return {"both": height * b ** 3 + colour, "color": colour, "height": height}

    def fit(self, clouds: Iterable[Cloud]) -> "LookupTable":
        parts = [(c, k, l) for c, k, l in clouds if len(l)]
        if not parts:
            raise ValueError("LookupTable.fit: no labelled point")
        coord, color, labels = (np.concatenate(x) for x in zip(*parts))
        keys = self._keys(coord, color)
        self.tables = {name: _majority(k, labels, self.num_classes)[:2] for name, k in keys.items()}
        self.fallback = int(np.bincount(labels, minlength=self.num_classes).argmax())
        return self

    def predict(self, coord: np.ndarray, color: np.ndarray) -> np.ndarray:
        keys = self._keys(coord, color)
        pred = np.full(len(coord), -1, np.int64)
        for name in ("both", "color", "height"):
            todo = pred < 0
            pred[todo] = _lookup(self.tables[name], keys[name][todo])
        pred[pred < 0] = self.fallback
        return pred


@dataclass
class NearestNeighbours:
    """Majority class of the k nearest training points in (colour / 255, height / height_scale)."""

    num_classes: int
    k: int = 5
    # metres of height that weigh as much as the full range of one colour channel; chosen on the benchmark world's val
    # split (k = 5, all labels: 0.5 / 1 / 2 m -> 53.9 / 55.6 / 56.5 val mIoU)
    height_scale: float = 2.0
    tree: object = None
    labels: Optional[np.ndarray] = None

    def _features(self, coord: np.ndarray, color: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(color, np.float32) / 255.0,
                               np.asarray(coord, np.float32)[:, 2:3] / self.height_scale], 1)

    def fit(self, clouds: Iterable[Cloud]) -> "NearestNeighbours":
        from scipy.spatial import cKDTree

        parts = [(c, k, l) for c, k, l in clouds if len(l)]
        if not parts:
            raise ValueError("NearestNeighbours.fit: no labelled point")
        coord, color, labels = (np.concatenate(x) for x in zip(*parts))
        self.tree, self.labels = cKDTree(self._features(coord, color)), labels.astype(np.int64)
        return self

    def predict(self, coord: np.ndarray, color: np.ndarray, chunk: int = 200_000) -> np.ndarray:
        k = min(self.k, len(self.labels))
        out = np.empty(len(coord), np.int64)
        for s in range(0, len(coord), chunk):
            _, idx = self.tree.query(self._features(coord[s:s + chunk], color[s:s + chunk]), k=k, workers=1)
            votes = self.labels[np.asarray(idx).reshape(-1, k)]
            counts = np.zeros((len(votes), self.num_classes), np.int64)
            np.add.at(counts, (np.repeat(np.arange(len(votes)), k), votes.reshape(-1)), 1)
            out[s:s + chunk] = counts.argmax(1)
        return out


def score_floor(model, scenes: Sequence, classes) -> dict:
    """`ppkt.train.metrics.segmentation_metrics` of `model` (a fitted floor) over every labelled point of `scenes`
    (scene folders; `classes` a ClassSet), as the networks are scored."""
    import torch

    from ppkt.data.scenes import load_scene
    from ppkt.train.metrics import confusion_matrix, segmentation_metrics

    conf = torch.zeros(classes.num_classes, classes.num_classes, dtype=torch.long)
    for folder in scenes:
        s = load_scene(folder, classes)
        conf += confusion_matrix(model.predict(s.coord, s.color), s.segment, classes.num_classes, ignore_index=-1)
    return segmentation_metrics(conf, classes.names)


def training_clouds(scenes: Sequence, classes, limited_points: Optional[int], seed: int,
                    spacing: float = FIT_SPACING) -> list:
    """The labelled points a fine-tuning run with these scenes, `limited_points` and `seed` trains on, each scene's
    sampled on a `spacing` grid (limited points are kept as they are: they are already sparse)."""
    from ppkt.data.scenes import limit_points, load_scene, scene_seed

    out = []
    for folder in scenes:
        s = load_scene(folder, classes)
        if limited_points is not None:
            seg = limit_points(s.segment, limited_points, scene_seed(seed, folder.name))
            keep = seg >= 0
            out.append((s.coord[keep], s.color[keep], seg[keep]))
        else:
            out.append(grid_majority(s.coord, s.color, s.segment, spacing, classes.num_classes))
    return out
