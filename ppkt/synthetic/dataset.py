"""Write a synthetic dataset to disk: RGB-D frames (ScanNet export layout) and labelled scenes (Pointcept layout).

Layout of ``out``::

    frames/scene_0000/color/<i>.jpg        RGB, JPEG quality 95, at the depth resolution
                      depth/<i>.png        uint16 millimetres, 0 = no measurement
                      label/<i>.png        uint8 class id, 255 = nothing hit
                      instance/<i>.png     uint16 object index + 1, 0 = none
                      pose/<i>.txt         4x4 camera-to-world (x right, y down, z forward), metres
                      intrinsic/intrinsic_{color,depth}.txt (4x4, K top-left), extrinsic_{color,depth}.txt (I)
    scenes/scene_0000/{coord,color,normal,segment,instance,boxes}.npy
                                           (compact=True: {coord,color,segment,boxes}.npy, coord float16)
    classes.json  splits/train.txt  splits/val.txt  dataset.json

A test world (``test=True``) is another world nobody tunes on: its scenes are named ``test_0000``, ... (no name in
common with any train or val scene), all listed in ``splits/test.txt``, and with ``frames_per_scene=0`` it has no
frames at all, so no pretraining run can see them. Make it from another ``seed`` than the world it tests.

Scene i draws all its randomness from ``SeedSequence(seed, spawn_key=(i,))``, so the files do not depend on
``workers`` or on the order scenes are written in; a scene is built in ``out/.tmp`` and renamed when complete,
and a rerun with the same arguments skips the scenes already there.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np
from PIL import Image

from ppkt.pool import process_pool
from ppkt.progress import Progress
from ppkt.synthetic.pointcloud import sample_surface, save_scene
from ppkt.synthetic.render import RenderedFrame, add_depth_noise, camera_trajectory, default_intrinsics, render_frame
from ppkt.synthetic.scene import CLASS_NAMES, Scene, class_table, generate_scene

__all__ = ["DATASET_VERSION", "VAL_FRACTION", "WORLD_PRESETS", "val_scene_count", "scene_name", "scene_rngs",
           "make_scene", "render_scene", "write_frame_folder", "write_dataset"]

DATASET_VERSION = 1
VAL_FRACTION = 0.2
# Named argument sets of write_dataset (`ppkt synth --preset NAME`). "benchmark": the transfer benchmark's world;
# 120 rooms (96 train, 24 val), 8 frames each (960 frames: PPKT's 300 iterations x 4 draw 1200, the 2D teacher
# sees 768 training frames), points every 2.5 cm (fine-tuning grid-samples its 5 cm voxels' clouds at 2.5 cm),
# compact scene files: 374 MB (3.1 MB a scene), 3.3 min with workers=2 on 2 cores shared with other jobs (167 s
# of CPU; docs/synthetic.md).
WORLD_PRESETS: dict[str, dict] = {
    "benchmark": {"scenes": 120, "frames_per_scene": 8, "point_spacing": 0.025, "compact": True},
}
# dataset.json keys added after version 1 was first written, with the value older files mean by their absence
_PARAM_DEFAULTS = {"compact": False, "test": False}


def val_scene_count(scenes: int) -> int:
    """Scenes in the val split of a world of ``scenes``: round(VAL_FRACTION * scenes), at least 1 and at most
    scenes - 1 when scenes > 1, else 0 (120 scenes: 24)."""
    if scenes <= 1:
        return 0
    return min(max(int(round(VAL_FRACTION * scenes)), 1), scenes - 1)


TEST_PREFIX = "test"  # scene names of a test world


def scene_name(index: int, prefix: str = "scene") -> str:
    return f"{prefix}_{index:04d}"


def scene_rngs(seed: int, index: int) -> dict[str, np.random.Generator]:
    """Independent generators of scene ``index``: "scene" (layout), "camera", "noise" (depth), "points"."""
    children = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(4)
    return dict(zip(("scene", "camera", "noise", "points"), (np.random.default_rng(c) for c in children)))


def make_scene(seed: int, index: int) -> Scene:
    """Scene ``index`` of the dataset with ``seed`` (the same as :func:`write_dataset` writes)."""
    return generate_scene(scene_rngs(seed, index)["scene"])


def render_scene(scene: Scene, frames: int, rng: np.random.Generator, image_size=(240, 320)) -> list[RenderedFrame]:
    """Render ``frames`` views along a :func:`camera_trajectory` drawn from ``rng`` (no depth noise)."""
    K = default_intrinsics(*image_size)
    return [render_frame(scene, K, pose, tuple(image_size)) for pose in camera_trajectory(scene, frames, rng)]


def _write_matrix(path: Path, m: np.ndarray) -> None:
    full = np.eye(4)
    full[: m.shape[0], : m.shape[1]] = m
    np.savetxt(path, full, fmt="%.9f")


def write_frame_folder(folder: str | os.PathLike, frames: list[RenderedFrame],
                       depths: list[np.ndarray] | None = None) -> Path:
    """Write frames in the ScanNet exported-frame layout (plus label/ and instance/) into ``folder``.

    depths: optional per-frame depth maps (H, W) float32 m to store instead of ``frame.depth`` (e.g. noisy).
    """
    folder = Path(folder)
    for sub in ("color", "depth", "label", "instance", "pose", "intrinsic"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    K = frames[0].intrinsics
    for name in ("intrinsic_color", "intrinsic_depth"):
        _write_matrix(folder / "intrinsic" / f"{name}.txt", K)
    for name in ("extrinsic_color", "extrinsic_depth"):
        _write_matrix(folder / "intrinsic" / f"{name}.txt", np.eye(4))
    for i, fr in enumerate(frames):
        depth = fr.depth if depths is None else depths[i]
        mm = np.clip(np.rint(depth.astype(np.float64) * 1000.0), 0, 65535).astype(np.uint16)
        Image.fromarray(fr.color).save(folder / "color" / f"{i}.jpg", quality=95, subsampling=0)
        Image.fromarray(mm).save(folder / "depth" / f"{i}.png")
        Image.fromarray(fr.semantic.astype(np.uint8)).save(folder / "label" / f"{i}.png")
        Image.fromarray(fr.instance.astype(np.uint16)).save(folder / "instance" / f"{i}.png")
        _write_matrix(folder / "pose" / f"{i}.txt", fr.pose)
    return folder


def _scene_job(job: dict, on_frame=None) -> dict:
    """Build scene ``job['index']`` in a temp folder, then move it into place. Returns its counts."""
    out, i, name = Path(job["out"]), job["index"], scene_name(job["index"], job["prefix"])
    rngs = scene_rngs(job["seed"], i)
    scene = generate_scene(rngs["scene"])
    tmp = out / ".tmp" / f"{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    K, hw = default_intrinsics(*job["image_size"]), tuple(job["image_size"])
    frames, depths = [], []
    for pose in camera_trajectory(scene, job["frames"], rngs["camera"]) if job["frames"] else ():
        fr = render_frame(scene, K, pose, hw)
        frames.append(fr)
        depths.append(add_depth_noise(fr.depth, rngs["noise"]) if job["depth_noise"] else fr.depth)
        if on_frame:
            on_frame()
    if frames:
        write_frame_folder(tmp / "frames", frames, depths)
    pc = sample_surface(scene, job["point_spacing"], rng=rngs["points"])
    save_scene(tmp / "scene", pc, scene.boxes, compact=job["compact"])
    moves = ((tmp / "frames", out / "frames" / name),) if frames else ()
    for src, dst in (*moves, (tmp / "scene", out / "scenes" / name)):
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(src, dst)
    tmp.rmdir()
    return _counts(scene.boxes, len(pc), len(frames))


def _counts(boxes: np.ndarray, points: int, frames: int) -> dict:
    per_class = np.bincount(boxes[:, 7].astype(np.int64), minlength=len(CLASS_NAMES)) if len(boxes) else \
        np.zeros(len(CLASS_NAMES), np.int64)
    return {"points": int(points), "frames": int(frames), "objects": per_class.tolist()}


def _existing_counts(out: Path, name: str, with_frames: bool = True) -> dict | None:
    """Counts of a scene already complete on disk, or None."""
    fdir, sdir = out / "frames" / name, out / "scenes" / name
    if not ((fdir.is_dir() or not with_frames) and (sdir / "boxes.npy").is_file() and (sdir / "coord.npy").is_file()):
        return None
    coord = np.load(sdir / "coord.npy", mmap_mode="r")
    return _counts(np.load(sdir / "boxes.npy"), coord.shape[0],
                   len(list((fdir / "pose").glob("*.txt"))) if with_frames else 0)


def write_dataset(out: str | Path, scenes: int, frames_per_scene: int, seed: int = 0,
                  image_size: tuple[int, int] = (240, 320), workers: int = 1, point_spacing: float = 0.02,
                  depth_noise: bool = True, progress: bool = True, compact: bool = False, test: bool = False) -> Path:
    """Generate ``scenes`` rooms with ``frames_per_scene`` RGB-D frames each into ``out`` (layout: module doc).

    image_size: (H, W) of the frames. point_spacing: m between surface samples. depth_noise: store sensor-like
    depth (see :func:`add_depth_noise`); labels, color and poses are exact either way. compact: scene files with
    only coord (float16), color, segment (int8) and boxes (see :func:`save_scene`). The validation split is
    round(VAL_FRACTION * scenes) scenes (at least 1 when scenes > 1). :data:`WORLD_PRESETS` holds named argument
    sets (``write_dataset(out, **WORLD_PRESETS["benchmark"], workers=2)``). workers > 1 writes scenes
    in a process pool; the files are the same for any ``workers``. A folder holding a dataset made with other
    arguments is refused (FileExistsError); the same arguments resume it. test: a test world (module doc): scenes
    ``test_<i>``, all in split ``test``; ``frames_per_scene=0`` writes no frames. Returns ``Path(out)``.
    """
    out = Path(out)
    H, W = (int(v) for v in image_size)
    if scenes < 1 or frames_per_scene < (0 if test else 1):
        raise ValueError(f"need scenes >= 1 and frames_per_scene >= {0 if test else 1}, got {scenes} and {frames_per_scene}")
    if H < 2 or W < 2 or not point_spacing > 0 or workers < 1:
        raise ValueError(f"bad arguments: image_size={image_size}, point_spacing={point_spacing}, workers={workers}")
    params = {"version": DATASET_VERSION, "seed": int(seed), "scenes": int(scenes),
              "frames_per_scene": int(frames_per_scene), "image_size": [H, W], "point_spacing": float(point_spacing),
              "depth_noise": bool(depth_noise), "compact": bool(compact), "test": bool(test)}
    meta_path = out / "dataset.json"
    if meta_path.is_file():
        old_meta = json.loads(meta_path.read_text())
        old = {k: old_meta.get(k, _PARAM_DEFAULTS.get(k)) for k in params}
        if old != params:
            diff = {k: (old[k], params[k]) for k in params if old[k] != params[k]}
            raise FileExistsError(f"{out} holds a dataset made with other arguments {diff} (old, new); "
                                  "use a new folder or delete it")
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists, is not empty and holds no dataset.json; use a new or empty folder")
    prefix = TEST_PREFIX if test else "scene"
    for sub in ("frames", "scenes", "splits", ".tmp") if frames_per_scene else ("scenes", "splits", ".tmp"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps({**params, "complete": False}, indent=2) + "\n")
    (out / "classes.json").write_text(json.dumps(class_table(), indent=2) + "\n")

    counts: dict[int, dict] = {}
    todo = []
    for i in range(scenes):
        done = _existing_counts(out, scene_name(i, prefix), frames_per_scene > 0)
        if done is not None:
            counts[i] = done
        else:
            todo.append(dict(out=str(out), index=i, seed=int(seed), frames=int(frames_per_scene),
                             image_size=(H, W), point_spacing=float(point_spacing), depth_noise=bool(depth_noise),
                             compact=bool(compact), prefix=prefix))
    per_scene = max(frames_per_scene, 1)  # progress in frames (in scenes for a world without frames)
    with Progress(scenes * per_scene, "synth", unit="frame" if frames_per_scene else "scene",
                  initial=len(counts) * per_scene, enabled=progress) as bar:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                counts[job["index"]] = _scene_job(job, on_frame=lambda: bar.update(1))
                if not frames_per_scene:
                    bar.update(1)
                bar.report(scenes=f"{len(counts)}/{scenes}")
        else:
            with process_pool(min(workers, len(todo))) as pool:
                futures = {pool.submit(_scene_job, job): job["index"] for job in todo}
                for fut in as_completed(futures):
                    counts[futures[fut]] = fut.result()
                    bar.update(per_scene)
                    bar.report(scenes=f"{len(counts)}/{scenes}")
    shutil.rmtree(out / ".tmp", ignore_errors=True)

    perm = np.random.default_rng(np.random.SeedSequence(seed)).permutation(scenes)
    n_val = 0 if test else val_scene_count(scenes)
    splits = (("test", perm),) if test else (("train", perm[n_val:]), ("val", perm[:n_val]))
    for split, ids in splits:
        (out / "splits" / f"{split}.txt").write_text("".join(scene_name(i, prefix) + "\n" for i in sorted(ids)))
    objects = np.sum([counts[i]["objects"] for i in range(scenes)], 0)
    meta = {**params, "complete": True, "num_classes": len(CLASS_NAMES),
            "counts": {"scenes": scenes, "frames": int(sum(c["frames"] for c in counts.values())),
                       "points": int(sum(c["points"] for c in counts.values())), "objects": int(objects.sum()),
                       **({"test_scenes": scenes} if test else {"train_scenes": scenes - n_val, "val_scenes": n_val}),
                       "objects_per_class": dict(zip(CLASS_NAMES, objects.tolist()))}}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return out
