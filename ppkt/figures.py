"""The analysis figures (`ppkt figures ...`): what the teacher's pixels carry, what the student learned, how runs trained.

- `tsne_figure` (paper Figure 3): t-SNE of the teacher's global image features (one per frame) beside its pixel
  features (sampled pixels), coloured by class, on frames with 2D labels (the synthetic world's `label/` PNGs);
- `pca_figure`: a frame's voxels coloured by a 3-component PCA of the student's point features, from random weights
  (seed 0, "before") and from a pretraining run's export ("after"): PLY files and a rendered PNG;
- `curves_figure`: the training loss of several runs (their metrics.jsonl) in one plot.
Each writes its files atomically and returns their paths with the number of points drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ppkt.atomic import atomic_path


def _save_png(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------- (a) t-SNE
@torch.no_grad()
def teacher_points(teacher: torch.nn.Module, frames: Sequence[Tuple[np.ndarray, np.ndarray]], pixels_per_frame: int,
                   ignore: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Global features (F, C) (the mean of each frame's feature map) with each frame's majority class, and pixel
    features (P, C) (the feature map bilinearly upsampled to the image, at `pixels_per_frame` random labelled pixels)
    with their classes. frames: (color (H, W, 3) uint8, label (H, W) class ids) each."""
    gen = np.random.default_rng(seed)
    g, g_cls, p, p_cls = [], [], [], []
    for color, label in frames:
        image = torch.from_numpy(color).permute(2, 0, 1)[None].float() / 255.0
        fmap = teacher(image).float()  # (1, C, h, w)
        labelled = np.flatnonzero(label.reshape(-1) != ignore)
        if labelled.size == 0:
            continue
        g.append(fmap.mean(dim=(2, 3))[0].numpy())
        g_cls.append(np.bincount(label.reshape(-1)[labelled]).argmax())
        pick = gen.choice(labelled, size=min(pixels_per_frame, labelled.size), replace=False)
        full = F.interpolate(fmap, size=label.shape, mode="bilinear", align_corners=False)[0].flatten(1)  # (C, H*W)
        p.append(full[:, torch.from_numpy(pick)].T.numpy())
        p_cls.append(label.reshape(-1)[pick])
    if not g:
        raise ValueError("tsne: no frame has a labelled pixel")
    return {"global": np.stack(g), "global_class": np.asarray(g_cls), "pixel": np.concatenate(p),
            "pixel_class": np.concatenate(p_cls)}


def embed_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) t-SNE of (N, C) features (scikit-learn; perplexity 30, or less for few points)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ImportError("ppkt figures tsne needs scikit-learn: pip install scikit-learn") from None
    perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x.astype(np.float64))


def tsne_figure(points: Dict[str, np.ndarray], names: Sequence[str], out: Path, seed: int = 0) -> Dict[str, object]:
    """Two t-SNE panels (global, pixel) coloured by class: out (PNG) and out.with_suffix(".npz") (the 2D points and
    classes). Returns {"png", "npz", "global", "pixel"} (the point counts)."""
    plt = _pyplot()
    xy = {k: embed_2d(points[k], seed) for k in ("global", "pixel")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), dpi=100)
    cmap = plt.get_cmap("tab20")
    for ax, key, title in zip(axes, ("global", "pixel"), ("global image features (one per frame)",
                                                           "pixel features (sampled labelled pixels)")):
        cls = points[f"{key}_class"]
        for c in np.unique(cls):
            m = cls == c
            ax.scatter(xy[key][m, 0], xy[key][m, 1], s=6 if key == "pixel" else 18, color=cmap(int(c) % 20),
                       label=names[int(c)] if int(c) < len(names) else str(c))
        ax.set_title(f"{title}, n = {len(cls)}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2)
    fig.tight_layout()
    out = Path(out)
    _save_png(fig, out)
    npz = out.with_suffix(".npz")
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, global_xy=xy["global"], global_class=points["global_class"], pixel_xy=xy["pixel"],
                     pixel_class=points["pixel_class"])
    return {"png": out, "npz": npz, "global": len(points["global_class"]), "pixel": len(points["pixel_class"])}


# ---------------------------------------------------------------------------------------------- (b) PCA
def pca_colors(features: torch.Tensor) -> np.ndarray:
    """(M, 3) uint8 colours: the first 3 principal components of (M, C) features, each scaled to 0..255 over the
    2nd to 98th percentile."""
    x = features.double() - features.double().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    pcs = (x @ v[:3].T).numpy()
    if pcs.shape[1] < 3:
        pcs = np.pad(pcs, ((0, 0), (0, 3 - pcs.shape[1])))
    lo, hi = np.percentile(pcs, 2, axis=0), np.percentile(pcs, 98, axis=0)
    return (np.clip((pcs - lo) / np.maximum(hi - lo, 1e-12), 0, 1) * 255).round().astype(np.uint8)


@torch.no_grad()
def student_features(student: torch.nn.Module, sample) -> torch.Tensor:
    """(M, C) point features of one `ppkt.data.pairs.PairSample`."""
    coords = torch.cat([torch.zeros(sample.coords.shape[0], 1, dtype=torch.int32), sample.coords.int()], dim=1)
    return student.eval()(sample.feats.float(), coords, 1)


def pca_figure(sample, students: Dict[str, torch.nn.Module], out_dir: Path) -> Dict[str, object]:
    """out_dir/<name>.ply per student (voxel points in metres, PCA colours) and out_dir/pca.png (the students side
    by side, seen from above). Returns {"ply": [paths], "png": path, "points": M}."""
    from ppkt.data.ply import write_ply

    plt = _pyplot()
    out_dir = Path(out_dir)
    xyz = sample.points.numpy()
    fig, axes = plt.subplots(1, len(students), figsize=(5 * len(students), 5), dpi=100, squeeze=False)
    plys = []
    for ax, (name, student) in zip(axes[0], students.items()):
        rgb = pca_colors(student_features(student, sample))
        plys.append(write_ply(out_dir / f"{name}.ply", xyz, rgb))
        order = np.argsort(xyz[:, 2])  # higher points drawn last (a view from above)
        ax.scatter(xyz[order, 0], xyz[order, 1], c=rgb[order] / 255.0, s=3)
        ax.set_title(f"{name}: PCA of the student's point features")
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    png = _save_png(fig, out_dir / "pca.png")
    return {"ply": plys, "png": png, "points": int(xyz.shape[0])}


# ---------------------------------------------------------------------------------------------- (c) curves
def curves_figure(runs: Sequence[Path], out: Path, labels: Optional[Sequence[str]] = None,
                  key: str = "loss") -> Dict[str, object]:
    """`key` against iteration for each run folder's metrics.jsonl, in one plot, and the plotted series beside it
    (<out>.json: {"key", "series": [{"label", "points": [[iteration, value], ...]}]}). Returns {"png", "points" (per
    run), "data"}."""
    from ppkt.atomic import write_json
    from ppkt.train.logging import read_metrics

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    counts: List[int] = []
    series = []
    for i, run in enumerate(runs):
        rows = [r for r in read_metrics(Path(run) / "metrics.jsonl") if key in r]
        if not rows:
            raise FileNotFoundError(f"{Path(run) / 'metrics.jsonl'}: no '{key}' values (is it a ppkt run folder?)")
        label = labels[i] if labels else Path(run).name
        points = [[r["iteration"], r[key]] for r in rows]
        line, = ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
        series.append({"label": label, "points": [[float(x), float(y)] for x, y in zip(*line.get_data())]})
        counts.append(len(rows))
    ax.set_xlabel("iteration")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    data = write_json(Path(out).with_suffix(".json"), {"key": key, "series": series})
    return {"png": _save_png(fig, Path(out)), "points": counts, "data": data}
