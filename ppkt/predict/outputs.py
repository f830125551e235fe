"""What `ppkt predict` writes for a scan, each file atomically: the labels (.labels.npy), a PLY coloured by class,
a PNG preview (top view and side view of the labelled points, with a class legend) and the ScanNet benchmark text
file; the run's summary.json is written by the command."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ppkt.atomic import atomic_path
from ppkt.data.class_lists import SCANNET20_NYU40
from ppkt.errors import UserError


def save_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
    return path


def write_scannet_labels(path: Path, labels: np.ndarray, class_set: str) -> Path:
    """One NYU40 id per line for each point (the ScanNet benchmark's per-vertex submission format)."""
    if class_set not in ("scannet20", "scannet"):
        raise UserError(f"--format scannet: the model's classes are {class_set!r}; the ScanNet benchmark takes a "
                        "model trained on the scannet20 classes")
    nyu = np.asarray(SCANNET20_NYU40)[labels]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{v}\n" for v in nyu))
    return path


def _sample(n: int, max_points: int) -> np.ndarray:
    """Indices of at most max_points of n points (seeded: the same preview every time)."""
    return np.random.default_rng(0).choice(n, max_points, replace=False) if n > max_points else np.arange(n)


def _from_above(xyz: np.ndarray) -> np.ndarray:
    """The points to draw from above, lowest first: all but the top 30 cm (a ceiling would hide the room)."""
    top = np.flatnonzero(xyz[:, 2] < xyz[:, 2].max() - 0.3) if np.ptp(xyz[:, 2]) > 0.6 else np.arange(len(xyz))
    return top[np.argsort(xyz[top, 2])]


def _marker_size(n: int) -> float:
    return float(np.clip(3e5 / max(n, 1), 1.5, 12.0))  # points^2: dense clouds small, sparse ones large


def _finish(fig, handles: list, title: str, path: Path) -> Path:
    """Legend under the plots, title, and the PNG written atomically."""
    import matplotlib.pyplot as plt

    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.03 * (len(handles) // 6), 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def preview(path: Path, coord: np.ndarray, labels: np.ndarray, names: Sequence[str], colors: np.ndarray,
            title: str, max_points: int = 150_000) -> Path:
    """A PNG: the points from above and from the side, coloured by class, with a legend of the classes present
    (with their share of the points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    pick = _sample(len(coord), max_points)
    xyz, rgb = coord[pick], colors[labels[pick]] / 255.0
    size = _marker_size(len(pick))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), dpi=100)
    top = _from_above(xyz)
    axes[0].scatter(xyz[top, 0], xyz[top, 1], c=rgb[top], s=size, marker="o", linewidths=0)
    axes[0].set_title("from above (x, y; the top 30 cm left out)", fontsize=9)
    # side view without the nearest 30 cm (a wall would hide the room), nearer points drawn last
    side = np.flatnonzero(xyz[:, 1] > xyz[:, 1].min() + 0.3) if np.ptp(xyz[:, 1]) > 0.6 else np.arange(len(xyz))
    side = side[np.argsort(-xyz[side, 1])]
    axes[1].scatter(xyz[side, 0], xyz[side, 2], c=rgb[side], s=size, marker="o", linewidths=0)
    axes[1].set_title("from the side (x, z; the nearest 30 cm left out)", fontsize=9)
    for ax in axes:
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    counts = np.bincount(labels, minlength=len(names))
    present = [c for c in np.argsort(-counts) if counts[c]]
    handles = [Patch(color=colors[c] / 255.0, label=f"{names[c]} ({100 * counts[c] / len(labels):.0f} %)")
               for c in present]
    return _finish(fig, handles, title, path)


def preview_boxes(path: Path, coord: np.ndarray, color: np.ndarray, boxes: np.ndarray, names: Sequence[str],
                  colors: np.ndarray, title: str, max_points: int = 150_000) -> Path:
    """A PNG: the points from above (their own colours, the top 30 cm left out) with each box's footprint drawn in
    its class colour and its score, and a legend of the classes found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Polygon

    from ppkt.detection.boxes import corners

    pick = _sample(len(coord), max_points)
    xyz, rgb = coord[pick], np.clip(color[pick], 0, 255) / 255.0
    top = _from_above(xyz)
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    ax.scatter(xyz[top, 0], xyz[top, 1], c=rgb[top], s=_marker_size(len(pick)), marker="o", linewidths=0, alpha=0.6)
    for box in boxes:
        c = corners(box[:7])[:4, :2]  # the bottom face's corners, in order around the box
        cls = int(box[7])
        ax.add_patch(Polygon(c, closed=True, fill=False, edgecolor=colors[cls] / 255.0, linewidth=2))
        ax.text(*box[:2], f"{box[8]:.2f}", fontsize=6, ha="center", va="center", color=colors[cls] / 255.0)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    ax.set_title("from above (x, y): boxes with their scores", fontsize=9)
    counts = np.bincount(boxes[:, 7].astype(np.int64), minlength=len(names)) if len(boxes) else np.zeros(len(names), int)
    handles = [Patch(edgecolor=colors[c] / 255.0, facecolor="none", linewidth=2, label=f"{names[c]} ({counts[c]})")
               for c in np.argsort(-counts) if counts[c]]
    return _finish(fig, handles, title, path)
