"""RGB-D frames on disk: the frame type, folder readers and input validation.

Two on-disk layouts are read (one folder = one scan):

* ``"scannet"``: ScanNet exported frames, ``color/<i>.jpg``, ``depth/<i>.png`` (uint16 mm),
  ``intrinsic/intrinsic_color.txt`` and ``intrinsic/intrinsic_depth.txt`` (4x4, K in the top-left 3x3),
  ``pose/<i>.txt`` (4x4 camera-to-world). Color is resampled to the depth camera (see
  :func:`resample_color_to_depth`); the frame's K is the depth K.
* ``"7scenes"``: ``frame-NNNNNN.color.{jpg,png}``, ``frame-NNNNNN.depth.png``, ``frame-NNNNNN.pose.txt`` and
  one ``camera-intrinsics.txt`` (3x3); color and depth are registered at the same resolution.

Depth policy: depth is float32 metres and ``0`` means "no measurement". NaN, +-inf and negative depth
pixels are set to 0 by :meth:`RGBDFrame.validate`, i.e. treated like sensor holes; depth beyond
``max_depth`` is set to 0 by the readers (this also removes the 65535 "invalid" code of raw 7-Scenes).
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from PIL import Image

from ppkt.atomic import is_partial
from ppkt.errors import UserError

__all__ = ["FrameError", "RGBDFrame", "FrameFolder", "open_frame_folder", "find_frame_folders",
           "read_color", "read_depth", "read_matrix", "resample_color_to_depth", "check_intrinsics", "check_pose"]

LAYOUTS = ("scannet", "7scenes")
_LAYOUT_HELP = ("expected a 'scannet' folder (color/<i>.jpg, depth/<i>.png, intrinsic/intrinsic_depth.txt, "
                "pose/<i>.txt) or a '7scenes' folder (frame-NNNNNN.color.jpg, frame-NNNNNN.depth.png, "
                "frame-NNNNNN.pose.txt, camera-intrinsics.txt)")
_COLOR_EXTS = (".jpg", ".jpeg", ".png")
_7SCENES_RE = re.compile(r"^frame-(\d+)\.(color\.(?:jpg|jpeg|png)|depth\.png|pose\.txt)$")


class FrameError(UserError):
    """Bad RGB-D input; the message names the file(s) and the problem."""


# ----------------------------------------------------------------------------------------- checks
def check_intrinsics(K: np.ndarray, where: str) -> np.ndarray:
    """Return K as (3, 3) float64 or raise FrameError naming ``where``."""
    K = np.asarray(K)
    if K.shape != (3, 3) or not np.issubdtype(K.dtype, np.number):
        raise FrameError(f"{where}: intrinsics must be a (3, 3) numeric matrix, got shape {K.shape} {K.dtype}")
    K = K.astype(np.float64)
    if not np.isfinite(K).all():
        raise FrameError(f"{where}: intrinsics contain NaN/inf:\n{K}")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise FrameError(f"{where}: intrinsics not invertible, need fx > 0 and fy > 0 "
                         f"(got fx={K[0, 0]:g}, fy={K[1, 1]:g})")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        raise FrameError(f"{where}: not a pinhole K (need K[1,0] = 0 and K[2] = [0, 0, 1]):\n{K}")
    if abs(K[0, 1]) > 1e-6 * K[0, 0]:
        raise FrameError(f"{where}: skewed intrinsics (K[0,1] = {K[0, 1]:g}) are not supported")
    return K


def check_pose(pose: np.ndarray, where: str) -> np.ndarray:
    """Return a camera-to-world pose as (4, 4) float64 or raise FrameError naming ``where``."""
    pose = np.asarray(pose)
    if pose.shape != (4, 4) or not np.issubdtype(pose.dtype, np.number):
        raise FrameError(f"{where}: pose must be a (4, 4) numeric matrix, got shape {pose.shape} {pose.dtype}")
    pose = pose.astype(np.float64)
    if not np.isfinite(pose).all():
        raise FrameError(f"{where}: pose contains NaN/inf (ScanNet marks frames without a valid pose by -inf)")
    R = pose[:3, :3]
    # Tolerance 1e-2: tracked sensor poses drift from rigid (7-Scenes: R R^T - I reaches 4e-4 by frame 950).
    if (not np.allclose(R @ R.T, np.eye(3), atol=1e-2) or np.linalg.det(R) <= 0
            or not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0])):
        raise FrameError(f"{where}: pose is not rigid (rotation must be orthonormal with det +1, "
                         f"last row [0, 0, 0, 1]):\n{pose}")
    return pose


def clean_depth(depth: np.ndarray, where: str) -> np.ndarray:
    """A float32 copy of depth (H, W) metres with NaN/inf/negative pixels set to 0 (invalid); FrameError naming
    ``where`` when no pixel is valid."""
    depth = depth.astype(np.float32)  # copy: never alter the caller's array
    depth[~(np.isfinite(depth) & (depth > 0))] = 0.0
    if not (depth > 0).any():
        raise FrameError(f"{where}: no valid depth pixel (all zero, NaN, inf or negative)")
    return depth


# ------------------------------------------------------------------------------------------ frame
@dataclass
class RGBDFrame:
    """One registered RGB-D frame.

    color: (H, W, 3) uint8 RGB. depth: (H, W) float32 metres, 0 = no measurement.
    intrinsics: (3, 3) float64 pinhole K in pixels for H x W (pixel centres at integer u, v).
    pose: (4, 4) float64 camera-to-world in metres, or None if unknown. source: name used in messages.
    """

    color: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray
    pose: np.ndarray | None
    source: str = "<frame>"

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return tuple(self.depth.shape[:2])

    def validate(self) -> "RGBDFrame":
        """Check and normalise the frame in place; return self or raise FrameError.

        NaN/inf/negative depth pixels become 0 (invalid, like sensor holes); intrinsics and pose become
        float64; depth becomes float32. Fails on wrong shapes/dtypes, color/depth size mismatch, bad K,
        a non-finite or non-rigid pose, or a frame without any valid depth pixel.
        """
        src = self.source
        color, depth = np.asarray(self.color), np.asarray(self.depth)
        if color.ndim != 3 or color.shape[2] != 3 or color.dtype != np.uint8:
            raise FrameError(f"{src}: color must be (H, W, 3) uint8 RGB, got {color.shape} {color.dtype}")
        if depth.ndim != 2:
            raise FrameError(f"{src}: depth must be (H, W), got shape {depth.shape}")
        if not np.issubdtype(depth.dtype, np.floating):
            raise FrameError(f"{src}: depth must be float metres, got {depth.dtype} "
                             "(divide raw sensor units by the depth scale first)")
        if color.shape[:2] != depth.shape:
            raise FrameError(f"{src}: color size {color.shape[1]}x{color.shape[0]} does not match "
                             f"depth size {depth.shape[1]}x{depth.shape[0]} (W x H)")
        self.color, self.depth = color, clean_depth(depth, src)
        self.intrinsics = check_intrinsics(self.intrinsics, src)
        if self.pose is not None:
            self.pose = check_pose(self.pose, src)
        return self



def frame_rgb(frame: RGBDFrame) -> Tensor:
    """(3, H, W) float RGB in [0, 1] of a frame: what the 2D augmentation starts from."""
    return torch.from_numpy(frame.color).permute(2, 0, 1).float() / 255.0

# ---------------------------------------------------------------------------------------- readers
def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise FrameError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()  # decode now, so truncated / corrupt files fail here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise FrameError(f"{path}: unreadable or corrupt image ({e})") from e
    return img


def read_color(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB."""
    return np.array(_open_image(Path(path)).convert("RGB"), dtype=np.uint8)


def read_depth(path: str | os.PathLike, depth_scale: float = 1000.0, max_depth: float | None = 10.0) -> np.ndarray:
    """Read a 16-bit depth PNG as (H, W) float32 metres (value / depth_scale); 0 and > max_depth -> 0."""
    path = Path(path)
    img = _open_image(path)
    if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise FrameError(f"{path}: depth must be a 16-bit single-channel PNG, got image mode {img.mode!r}")
    raw = np.asarray(img)
    if raw.ndim != 2:
        raise FrameError(f"{path}: depth must be single-channel, got shape {raw.shape}")
    depth = raw.astype(np.float32) / np.float32(depth_scale)
    depth[depth < 0] = 0.0
    if max_depth is not None:
        depth[depth > max_depth] = 0.0
    return depth


def read_matrix(path: str | os.PathLike, kind: str = "matrix") -> np.ndarray:
    """Read a whitespace-separated 3x3 or 4x4 text matrix as float64."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: {kind} file not found")
    try:
        with warnings.catch_warnings():  # an empty file warns, then fails the shape check below
            warnings.simplefilter("ignore", UserWarning)
            m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise FrameError(f"{path}: {kind} file is not a matrix of numbers ({e})") from e
    if m.shape not in ((3, 3), (4, 4)):
        raise FrameError(f"{path}: {kind} file must hold a 3x3 or 4x4 matrix, got shape {m.shape}")
    return m


def _read_intrinsics(path: Path) -> np.ndarray:
    return check_intrinsics(read_matrix(path, "intrinsics")[:3, :3], str(path))


def _read_pose(path: Path) -> np.ndarray:
    return check_pose(read_matrix(path, "pose"), str(path))


def resample_color_to_depth(color: np.ndarray, K_color: np.ndarray, K_depth: np.ndarray,
                            depth_hw: tuple[int, int]) -> np.ndarray:
    """Bring a color image to the depth camera (shared camera centre, pixel centres at integer coords).

    For each depth pixel (u, v) samples color at u_c = fx_c / fx_d * (u - cx_d) + cx_c (same for v) with
    bilinear interpolation, clamping at the image border. color: (Hc, Wc, 3) uint8 -> (H, W, 3) uint8.
    """
    H, W = depth_hw
    Hc, Wc = color.shape[:2]
    uc = K_color[0, 0] / K_depth[0, 0] * (np.arange(W) - K_depth[0, 2]) + K_color[0, 2]
    vc = K_color[1, 1] / K_depth[1, 1] * (np.arange(H) - K_depth[1, 2]) + K_color[1, 2]

    def taps(x: np.ndarray, n: int):
        x = np.clip(x, 0, n - 1)
        i0 = np.minimum(np.floor(x).astype(np.int64), n - 2) if n > 1 else np.zeros(x.shape, np.int64)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, (x - i0).astype(np.float32)

    x0, x1, wx = taps(uc, Wc)
    y0, y1, wy = taps(vc, Hc)
    # gather the rows first, then convert: the same values as converting the whole (larger) color image
    rows = color[y0].astype(np.float32) * (1 - wy)[:, None, None] + color[y1].astype(np.float32) * wy[:, None, None]  # (H, Wc, 3)
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]   # (H, W, 3)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- folders
def _scannet_files(root: Path, sub: str, exts: tuple[str, ...]) -> dict[str, Path]:
    d = root / sub
    if not d.is_dir():
        return {}
    return {p.stem: p for p in d.iterdir() if p.suffix.lower() in exts and p.stem.isdigit()}


def _7scenes_files(root: Path) -> dict[str, dict[str, Path]]:
    out: dict[str, dict[str, Path]] = {"color": {}, "depth": {}, "pose": {}}
    for p in root.iterdir():
        m = _7SCENES_RE.match(p.name)
        if m:
            out[m.group(2).split(".")[0]][m.group(1)] = p
    return out


def _detect_layout(root: Path) -> str | None:
    if not root.is_dir():
        return None
    if (root / "color").is_dir() and (root / "depth").is_dir() and (root / "intrinsic").is_dir():
        return "scannet"
    if any(_7SCENES_RE.match(n) for n in os.listdir(root)):
        return "7scenes"
    return None


class FrameFolder(Sequence):
    """One scan of RGB-D frames on disk; frames are read lazily and validated on access.

    ``names`` are the frame ids kept (after ``stride``), sorted numerically; ``folder[i]`` is an
    :class:`RGBDFrame`. Build it with :func:`open_frame_folder`.
    """

    def __init__(self, root: Path, layout: str, names: list[str], files: dict[str, dict[str, Path]],
                 K_depth: np.ndarray, K_color: np.ndarray | None, has_poses: bool,
                 depth_scale: float, max_depth: float | None):
        self.root, self.layout, self.names = root, layout, names
        self._files, self._K, self._K_color = files, K_depth, K_color
        self._has_poses, self._depth_scale, self._max_depth = has_poses, depth_scale, max_depth

    @property
    def has_poses(self) -> bool:
        """Whether every frame has a camera-to-world pose file."""
        return self._has_poses

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self.names)
        if not -n <= i < n:
            raise IndexError(f"frame index {i} out of range for {n} frames in {self.root}")
        name = self.names[i]
        cpath, dpath = self._files["color"][name], self._files["depth"][name]
        color = read_color(cpath)
        depth = read_depth(dpath, self._depth_scale, self._max_depth)
        K = self._K
        if self.layout == "scannet":
            if color.shape[:2] != depth.shape or not np.allclose(self._K_color, K):
                color = resample_color_to_depth(color, self._K_color, K, depth.shape)
        elif color.shape[:2] != depth.shape:
            raise FrameError(f"{cpath} ({color.shape[1]}x{color.shape[0]}) and {dpath} "
                             f"({depth.shape[1]}x{depth.shape[0]}): color and depth sizes differ")
        pose = _read_pose(self._files["pose"][name]) if self._has_poses else None
        return RGBDFrame(color, depth, K.copy(), pose, source=str(dpath)).validate()

    def depth_and_pose(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(depth (H, W) float32 metres, 0 = invalid; K (3, 3); pose (4, 4) camera-to-world) of frame i, without
        reading its colour. FrameError when the folder has no poses, the pose is invalid or no depth is valid."""
        name = self.names[i]
        dpath = self._files["depth"][name]
        if not self._has_poses:
            raise FrameError(f"{self.root}: no pose files; frame {name} cannot be placed in the world")
        depth = clean_depth(read_depth(dpath, self._depth_scale, self._max_depth), str(dpath))
        return depth, self._K.copy(), _read_pose(self._files["pose"][name])

    def __repr__(self) -> str:
        return f"FrameFolder({str(self.root)!r}, layout={self.layout!r}, frames={len(self)})"


def open_frame_folder(path: str | os.PathLike, layout: str = "auto", depth_scale: float = 1000.0,
                      max_depth: float | None = 10.0, stride: int = 1) -> FrameFolder:
    """Open one scan folder of RGB-D frames.

    layout: "scannet", "7scenes" or "auto" (detect). depth_scale: depth units per metre (1000 for mm PNGs).
    max_depth: metres; farther depth is set to 0 (None: no limit). stride: keep every k-th frame (k >= 1).
    Raises FrameError for a missing/unknown layout, bad intrinsics, or missing color/depth/pose files.
    """
    root = Path(path)
    if not (isinstance(stride, int) and stride >= 1):
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if not depth_scale > 0:
        raise ValueError(f"depth_scale must be > 0 (depth units per metre), got {depth_scale!r}")
    if max_depth is not None and not max_depth > 0:
        raise ValueError(f"max_depth must be > 0 metres or None, got {max_depth!r}")
    if not root.is_dir():
        raise FrameError(f"{root}: not a directory")
    if layout == "auto":
        layout = _detect_layout(root)
        if layout is None:
            raise FrameError(f"{root}: no RGB-D frames found; {_LAYOUT_HELP}")
    elif layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, got {layout!r}")

    K_color = None
    if layout == "scannet":
        files = {"color": _scannet_files(root, "color", _COLOR_EXTS),
                 "depth": _scannet_files(root, "depth", (".png",)),
                 "pose": _scannet_files(root, "pose", (".txt",))}
        K = _read_intrinsics(root / "intrinsic" / "intrinsic_depth.txt")
        K_color = _read_intrinsics(root / "intrinsic" / "intrinsic_color.txt")
        expected = {"color": lambda n: root / "color" / f"{n}.jpg", "depth": lambda n: root / "depth" / f"{n}.png",
                    "pose": lambda n: root / "pose" / f"{n}.txt"}
    else:
        files = _7scenes_files(root)
        K = _read_intrinsics(root / "camera-intrinsics.txt")
        expected = {"color": lambda n: root / f"frame-{n}.color.jpg", "depth": lambda n: root / f"frame-{n}.depth.png",
                    "pose": lambda n: root / f"frame-{n}.pose.txt"}

    names = sorted(set(files["color"]) | set(files["depth"]), key=lambda s: (int(s), s))
    if not names:
        raise FrameError(f"{root}: no frames found for layout {layout!r}; {_LAYOUT_HELP}")
    names = names[::stride]
    has_poses = bool(files["pose"])
    for name in names:
        for kind in ("color", "depth") + (("pose",) if has_poses else ()):
            if name not in files[kind]:
                raise FrameError(f"{expected[kind](name)}: {kind} file missing for frame {name}")
    return FrameFolder(root, layout, names, files, K, K_color, has_poses, depth_scale, max_depth)


def find_frame_folders(root: str | os.PathLike) -> list[Path]:
    """``[root]`` if root is a frame folder, else every frame folder below it (sorted, not nested)."""
    root = Path(root)
    if not root.is_dir():
        raise FrameError(f"{root}: not a directory; {_LAYOUT_HELP}")
    if _detect_layout(root) and not is_partial(root):
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_partial(Path(d)))  # not an export still being written
        for d in list(dirnames):
            p = Path(dirpath) / d
            if _detect_layout(p):
                found.append(p)
                dirnames.remove(d)  # do not descend into a scan
    if not found:
        raise FrameError(f"{root}: no RGB-D frame folders found below it; {_LAYOUT_HELP}")
    return sorted(found)
