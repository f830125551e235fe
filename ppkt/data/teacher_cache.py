"""Teacher feature cache: the frozen teacher's feature map of every pretraining frame, computed once
(`ppkt cache-teacher`, `write_teacher_cache`) and read during pretraining (`teacher.cache: DIR`) instead of
running the teacher at every iteration. g2D (the UPL) is still trained on the cached maps.

Layout of DIR:

* ``manifest.json``: format, version; ``teacher`` (arch, stage, weights, out_channels, stride, and state_sha256,
  the hash of its parameters and buffers: equal iff the weights are, whatever file they came from; with
  teacher.weights=none it depends on train.seed); ``image_size`` [H, W] pixels; ``variants`` ["plain"] or
  ["plain", "flipped"]; ``feature_shape`` [C, h, w]; ``dtype`` float16; ``folders``: one entry per finished frame
  folder, {root (absolute path: folders are matched by it), names (frame ids), file, unusable {name: reason}}.
* one ``<file>.npy`` per frame folder: (n_frames, n_variants, C, h, w) float16, read with mmap_mode="r".
  It is written as ``<file>.npy.partial`` and renamed when complete, then entered in the manifest (atomically):
  an interrupted run resumes at the first unfinished folder.

Which 2D augmentations stay exact (the cache holds teacher(image) for the very images pretraining would feed it):

* horizontal flip (augment.flip): exact. The cache holds the features of the plain and of the mirrored image
  (2 variants; 1 when augment.flip=0 or augment.enabled=false, and such a cache refuses a config that flips).
* random resize (augment.resize): not cacheable, so refused. A factor != 1 rescales the image and, above 1, crops
  it at a random offset; the teacher's output on a rescaled or cropped image is not a resampling or crop of its
  output on the whole image (padding, stride alignment), and a continuous factor has no finite set of images to
  store. teacher.cache needs augment.resize=[1, 1] (or augment.enabled=false), and validate_pretrain says so
  before any work. With resize=[1, 1] the image is the frame resized to data.image_size, as without a cache.
* 3D augmentations (elastic, rotation, scaling) and the pixel chosen for each voxel: unaffected (they move points).

Values: float32 teacher output rounded to float16 (relative error <= 2^-11, or 2^-25 absolute below 6.1e-5);
a feature beyond +-65504 is refused when the cache is written.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ppkt.atomic import PARTIAL, write_json
from ppkt.config import AugmentConfig, Checks, DataConfig, TeacherConfig, check_teacher_cache
from ppkt.data.frames import FrameError, FrameFolder, frame_rgb
from ppkt.errors import UserError
from ppkt.geometry.augment import ImageTransform

FORMAT = "ppkt-teacher-cache"
VERSION = 1
MANIFEST = "manifest.json"
VARIANTS = ("plain", "flipped")  # variant v holds the features of the image flipped horizontally iff v == 1
SETTINGS = ("format", "version", "teacher", "image_size", "variants", "feature_shape", "dtype")


class TeacherCacheError(UserError):
    """A teacher cache is missing, unfinished, or made for another teacher / image size / flip / frame list."""


def needs_flips(aug: AugmentConfig) -> bool:
    """True when pretraining with `aug` may flip an image (the cache must hold the mirrored variant)."""
    return aug.enabled and aug.flip > 0


def teacher_identity(teacher: Any) -> Dict[str, Any]:
    """arch, stage, weights, out_channels, stride and state_sha256 of a ppkt Teacher2D (any device)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return {"arch": teacher.arch, "stage": teacher.stage, "weights": str(teacher.weights),
            "out_channels": int(teacher.out_channels), "stride": int(teacher.stride), "state_sha256": digest.hexdigest()}


def _feature_size(image_size: Sequence[int], stride: int) -> List[int]:
    return [math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride)]


def _file_name(root: str) -> str:
    """<10 hex digits of the path's hash>-<folder name>.npy: unique per folder, readable."""
    name = re.sub(r"[^\w.-]", "_", Path(root).name) or "frames"
    return f"{hashlib.sha1(root.encode()).hexdigest()[:10]}-{name}.npy"


def _differences(have: Dict[str, Any], want: Dict[str, Any], prefix: str = "") -> List[str]:
    """"<key> is <there> there, <here> here" for every key of `want` (nested) that differs, except the weights'
    description (a path, which may differ between machines for the same weights: state_sha256 decides)."""
    out = []
    for key in want:
        if f"{prefix}{key}" == "teacher.weights":
            continue
        if isinstance(want[key], dict) and isinstance(have.get(key), dict):
            out += _differences(have[key], want[key], f"{prefix}{key}.")
        elif have.get(key) != want[key]:
            out.append(f"{prefix}{key} is {have.get(key)!r} there, {want[key]!r} here")
    return out


def _read_manifest(path: Path) -> Dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TeacherCacheError(f"{path}: unreadable teacher cache manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TeacherCacheError(f"{path}: not a teacher cache manifest (format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise TeacherCacheError(f"{path}: teacher cache version {manifest.get('version')}, this ppkt reads {VERSION}: "
                                "make it again with `ppkt cache-teacher`")
    return manifest


class TeacherCache:
    """A teacher cache folder, read-only: the feature map (C, h, w) float16 of (frame folder, frame, flip).

    The .npy files are opened with mmap_mode="r" on first use in each process (and not pickled to DataLoader
    workers), so memory holds only the pages read.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        if not self.manifest_path.is_file():
            raise TeacherCacheError(f"teacher.cache: {self.manifest_path} not found; make the cache with "
                                    f"`ppkt cache-teacher --config CONFIG --out {self.root}` (same config and overrides)")
        self.manifest = _read_manifest(self.manifest_path)
        self.entries: Dict[str, Dict[str, Any]] = {e["root"]: e for e in self.manifest["folders"]}
        self._arrays: Dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}

    def check_data(self, data: DataConfig, aug: AugmentConfig) -> None:
        """TeacherCacheError unless the cache serves this image size and flip setting; ConfigError for a resize."""
        m, where = self.manifest, self.manifest_path
        if list(m["image_size"]) != list(data.image_size):
            raise TeacherCacheError(f"{where}: made for data.image_size={m['image_size']}, the config has "
                                    f"{list(data.image_size)}; make the cache again with this config")
        if needs_flips(aug) and "flipped" not in m["variants"]:
            raise TeacherCacheError(f"{where}: holds unflipped features only (made with augment.flip=0), the config "
                                    f"flips with probability {aug.flip}; make the cache with this config, or set augment.flip=0")
        checks = Checks()
        check_teacher_cache(TeacherConfig(cache=str(self.root)), aug, checks)
        checks.done()  # ConfigError: augment.resize must be [1, 1]

    def check_teacher(self, teacher: Any) -> None:
        """TeacherCacheError naming every difference unless the cache was made by these very teacher weights."""
        have, want = self.manifest["teacher"], teacher_identity(teacher)
        diff = _differences(have, want, "teacher.")
        if diff:
            raise TeacherCacheError(f"{self.manifest_path}: made for another teacher: {'; '.join(diff)} (weights "
                                    f"{have.get('weights')!r} there, {want['weights']!r} here); make the cache again "
                                    "with this config (teacher.weights=none: the same train.seed)")

    def locate(self, folder: FrameFolder) -> Tuple[str, Dict[str, int]]:
        """(entry root, frame name -> row) of a frame folder; TeacherCacheError if any of its frames is not cached."""
        root = str(Path(folder.root).resolve())
        entry = self.entries.get(root)
        if entry is None:
            listed = ", ".join(list(self.entries)[:3]) + (", ..." if len(self.entries) > 3 else "")
            raise TeacherCacheError(f"{self.manifest_path}: no features of frame folder {root} (the cache holds "
                                    f"{len(self.entries)} folder(s): {listed}); make the cache with this config's data.roots")
        rows = {name: r for r, name in enumerate(entry["names"])}
        missing = [n for n in folder.names if n not in rows]
        if missing:
            raise TeacherCacheError(f"{self.manifest_path}: frame folder {root}: {len(missing)} frame(s) not cached "
                                    f"(e.g. {missing[:3]}); make the cache with this config's data.stride and frames")
        return root, rows

    def array(self, root: str) -> np.ndarray:
        """The (n_frames, n_variants, C, h, w) float16 memory map of a folder entry."""
        arr = self._arrays.get(root)
        if arr is None:
            entry, m = self.entries[root], self.manifest
            path = self.root / entry["file"]
            if not path.is_file():
                raise TeacherCacheError(f"{path} is missing: the teacher cache is incomplete; run `ppkt cache-teacher` again")
            arr = np.load(path, mmap_mode="r")
            want = (len(entry["names"]), len(m["variants"]), *m["feature_shape"])
            if arr.shape != want or arr.dtype != np.float16:
                raise TeacherCacheError(f"{path}: {arr.dtype} {arr.shape}, the manifest says float16 {want}")
            self._arrays[root] = arr
        return arr

    def features(self, root: str, rows: Dict[str, int], name: str, t2d: ImageTransform) -> Tensor:
        """(C, h, w) float16 features of frame `name` as seen through t2d (identity or flip only).

        FrameError if the frame was unusable when the cache was made (pretraining replaces it like any such frame).
        """
        image_size = list(self.manifest["image_size"])
        if list(t2d.resized) != image_size or list(t2d.out_size) != image_size or t2d.top or t2d.left:
            raise TeacherCacheError(f"{self.manifest_path}: the 2D augmentation resized or cropped the image "
                                    f"({t2d}); a teacher cache needs augment.resize=[1,1]")
        reason = self.entries[root]["unusable"].get(name)
        if reason is not None:
            raise FrameError(f"{root} frame {name}: no cached teacher features (unusable when cached: {reason})")
        variant = self.manifest["variants"].index("flipped" if t2d.flip else "plain")
        return torch.from_numpy(np.array(self.array(root)[rows[name], variant]))


def cache_settings(teacher: Any, image_size: Sequence[int], flips: bool) -> Dict[str, Any]:
    """The manifest's fixed part for this teacher, image size [H, W] and flip setting."""
    return {"format": FORMAT, "version": VERSION, "teacher": teacher_identity(teacher),
            "image_size": [int(s) for s in image_size], "variants": list(VARIANTS if flips else VARIANTS[:1]),
            "feature_shape": [int(teacher.out_channels), *_feature_size(image_size, teacher.stride)],
            "dtype": "float16"}


def write_teacher_cache(out: str | Path, folders: Sequence[FrameFolder], teacher: Any, image_size: Sequence[int],
                        flips: bool, batch_size: int = 8, progress: Any = None) -> Dict[str, Any]:
    """Compute and store the features of every frame of `folders`; returns the manifest.

    teacher: a ppkt Teacher2D (on the device to compute on); image_size: [H, W] pixels (data.image_size); flips:
    also store the mirrored image's features; batch_size: frames per teacher forward (x2 images with flips);
    progress: a ppkt.progress.Progress counting frames (optional). Folders already finished with the same frames
    are skipped; a cache of other settings (teacher, image size, variants) is refused, naming the differences.
    Frames unusable now (FrameError) are listed in the manifest with the reason, and their rows are zeros.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = cache_settings(teacher, image_size, flips)
    path = out / MANIFEST
    if path.is_file():
        manifest = _read_manifest(path)
        diff = _differences(manifest, settings)
        if diff:
            raise TeacherCacheError(f"{path}: a cache of other settings is there ({'; '.join(diff)}); give another "
                                    "--out, or delete that folder")
    else:
        manifest = {**settings, "folders": []}
        write_json(path, manifest)
    device = next(iter(teacher.parameters())).device
    h, w = settings["image_size"]
    for folder in folders:
        root = str(Path(folder.root).resolve())
        done = next((e for e in manifest["folders"] if e["root"] == root), None)
        if done is not None and done["names"] == list(folder.names) and (out / done["file"]).is_file():
            if progress is not None:
                progress.update(len(folder))
            continue
        entry = {"root": root, "names": list(folder.names), "file": _file_name(root), "unusable": {}}
        final = out / entry["file"]
        partial = final.with_name(final.name + PARTIAL)
        arr = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16,
                                        shape=(len(folder), len(settings["variants"]), *settings["feature_shape"]))
        for start in range(0, len(folder), batch_size):
            rows, images = [], []
            for i in range(start, min(start + batch_size, len(folder))):
                try:
                    frame = folder[i]
                except FrameError as err:
                    entry["unusable"][folder.names[i]] = str(err)
                    continue
                rgb = frame_rgb(frame)
                for flip in (False, True)[: len(settings["variants"])]:
                    images.append(ImageTransform(tuple(rgb.shape[1:]), (h, w), (h, w), 0, 0, flip).bilinear(rgb))
                rows.append(i)
            if rows:
                feats = teacher(torch.stack(images).to(device)).float()
                if list(feats.shape[1:]) != settings["feature_shape"]:
                    raise RuntimeError(f"teacher output {tuple(feats.shape[1:])}, expected {settings['feature_shape']}")
                if not bool(torch.isfinite(feats).all()) or feats.abs().max() > 65504:
                    raise TeacherCacheError(f"{root}: the teacher's features are not finite or exceed float16's range")
                arr[rows] = feats.cpu().reshape(len(rows), len(settings["variants"]), *feats.shape[1:]).half().numpy()
            if progress is not None:
                progress.update(min(start + batch_size, len(folder)) - start)
        arr.flush()
        del arr
        os.replace(partial, final)
        manifest["folders"] = [e for e in manifest["folders"] if e["root"] != root] + [entry]
        write_json(path, manifest)
        if progress is not None:
            progress.report(folder=Path(root).name, unusable=len(entry["unusable"]))
    return manifest
