"""`ppkt prepare scannet`: ScanNet .sens files -> the exported-frame layout that `ppkt pretrain` reads.

Per scan ``<out>/<scan>/``: ``color/<i>.jpg`` (brought to the depth camera: depth resolution and intrinsics),
``depth/<i>.png`` (uint16 millimetres), ``pose/<i>.txt`` (4x4 camera-to-world), ``intrinsic/intrinsic_color.txt``
(= the depth intrinsics, since the exported color lives in the depth camera), ``intrinsic/intrinsic_depth.txt``,
``intrinsic/extrinsic_{color,depth}.txt`` and ``intrinsic/intrinsic_color_sensor.txt`` (the color camera of the
.sens, for reference). ``<i>`` is the frame's index in the .sens; every k-th frame is exported. Frames whose pose
is invalid (ScanNet writes -inf) or whose image data is corrupt are skipped and counted; a truncated file fails
its scan (download it again). Scans are exported in parallel and resumably
(:mod:`ppkt.prepare.folders`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image

from ppkt.data.frames import FrameError, check_intrinsics, check_pose, resample_color_to_depth
from ppkt.data.sens import SensError, SensReader
from ppkt.prepare.folders import build_folder, done_info
from ppkt.prepare.parallel import run_jobs

JPEG_QUALITY = 95


def find_sens_files(scans: str | os.PathLike) -> List[Path]:
    """The .sens files of a ScanNet ``scans/`` folder (``<scan>/<scan>.sens``), or of any folder below it, sorted."""
    scans = Path(scans)
    if scans.is_file() and scans.suffix == ".sens":
        return [scans]
    if not scans.is_dir():
        raise FrameError(f"{scans}: not a folder (expected ScanNet's scans/ folder with <scan>/<scan>.sens)")
    found = sorted(p for p in scans.rglob("*.sens") if p.is_file())
    if not found:
        raise FrameError(f"{scans}: no .sens file found below it (expected <scan>/<scan>.sens)")
    return found


def write_matrix(path: Path, m: np.ndarray) -> None:
    """4x4 (or 3x3) text matrix; 9 significant digits keep float32 values exact."""
    np.savetxt(path, np.asarray(m, dtype=np.float64), fmt="%.9g")


def depth_to_mm(depth: np.ndarray, depth_shift: float) -> np.ndarray:
    """Raw .sens depth (units of 1 / depth_shift metres) -> uint16 millimetres (0 stays 0, clipped at 65535)."""
    if depth_shift == 1000.0:
        return depth.astype(np.uint16)
    mm = np.rint(depth.astype(np.float64) * (1000.0 / depth_shift))
    return np.clip(mm, 0, 65535).astype(np.uint16)


def export_scan(sens_path: Path, out_root: Path, every: int) -> dict:
    """Export every `every`-th frame of one .sens into ``out_root/<scan>``; returns the marker info (+ "skipped")."""
    scan = sens_path.stem

    def build(tmp: Path) -> dict:
        with SensReader(sens_path) as reader:
            h = reader.header
            K_color = check_intrinsics(h.intrinsic_color[:3, :3], f"{sens_path} (color intrinsics)")
            K_depth = check_intrinsics(h.intrinsic_depth[:3, :3], f"{sens_path} (depth intrinsics)")
            width, height = h.depth_size
            for sub in ("color", "depth", "pose", "intrinsic"):
                (tmp / sub).mkdir()
            K_out = h.intrinsic_depth.copy()
            write_matrix(tmp / "intrinsic" / "intrinsic_depth.txt", K_out)
            write_matrix(tmp / "intrinsic" / "intrinsic_color.txt", K_out)
            write_matrix(tmp / "intrinsic" / "intrinsic_color_sensor.txt", h.intrinsic_color)
            write_matrix(tmp / "intrinsic" / "extrinsic_color.txt", h.extrinsic_color)
            write_matrix(tmp / "intrinsic" / "extrinsic_depth.txt", h.extrinsic_depth)
            written, invalid, corrupt = [], [], []
            for i in range(0, len(reader), every):
                try:
                    pose = check_pose(reader.poses[i], f"{sens_path} frame {i}")
                except FrameError:
                    invalid.append(i)
                    continue
                try:
                    frame = reader[i]
                except SensError as err:
                    corrupt.append(f"{i}: {err}")
                    continue
                color = frame.color
                if color.shape[:2] != (height, width) or not np.allclose(K_color, K_depth):
                    color = resample_color_to_depth(color, K_color, K_depth, (height, width))
                Image.fromarray(color).save(tmp / "color" / f"{i}.jpg", quality=JPEG_QUALITY)
                Image.fromarray(depth_to_mm(frame.depth, h.depth_shift)).save(tmp / "depth" / f"{i}.png")
                write_matrix(tmp / "pose" / f"{i}.txt", pose)
                written.append(i)
        return {"scan": scan, "source": str(sens_path), "every": every, "frames": len(written),
                "invalid_pose_frames": invalid, "corrupt_frames": corrupt, "sensor": h.sensor_name, "size": [width, height]}

    return build_folder(Path(out_root) / scan, build)


@dataclass
class ExportSummary:
    scans: int = 0
    exported: int = 0
    already_done: int = 0
    frames: int = 0
    invalid_pose_frames: int = 0
    corrupt_frames: int = 0
    failed: List[str] = field(default_factory=list)  # "<file>: <error>"
    seconds: float = 0.0

    def text(self) -> str:
        lines = [f"{self.scans} scans: {self.exported} exported, {self.already_done} already done, {len(self.failed)} failed; "
                 f"{self.frames} frames written, {self.invalid_pose_frames} skipped for an invalid pose, "
                 f"{self.corrupt_frames} for corrupt image data; {self.seconds:.1f} s"]
        lines += [f"  failed: {f}" for f in self.failed]
        return "\n".join(lines)


def export_scans(scans: str | os.PathLike, out: str | os.PathLike, every: int = 25, workers: int = 1,
                 progress: bool = True) -> ExportSummary:
    """Export every .sens below `scans` into `out` (see the module docstring), `workers` scans at a time.

    A scan that fails (corrupt or truncated file) is reported in the summary and left unfinished, so a rerun
    tries it again; the others go on.
    """
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    files = find_sens_files(scans)
    out = Path(out)
    for path in files:
        info = done_info(out / path.stem)
        if info is not None and info.get("every") != every:
            raise FrameError(f"{out / path.stem}: exported earlier with --every {info.get('every')}, now asked for "
                             f"{every}; use another --out or delete that folder")
    out.mkdir(parents=True, exist_ok=True)
    summary, t0 = ExportSummary(scans=len(files)), time.perf_counter()
    for path, result, bar in run_jobs(export_scan, files, out, every, workers=workers, desc="prepare scannet",
                                      progress=progress):
        if isinstance(result, Exception):
            summary.failed.append(str(result))
            bar.write(f"error: {result}")
            continue
        if result["skipped"]:
            summary.already_done += 1
            continue
        summary.exported += 1
        summary.frames += result["frames"]
        invalid = result["invalid_pose_frames"]
        summary.invalid_pose_frames += len(invalid)
        if invalid:
            bar.write(f"{path}: skipped {len(invalid)} frame(s) with an invalid pose: {invalid[:10]}"
                      f"{' ...' if len(invalid) > 10 else ''}")
        summary.corrupt_frames += len(result["corrupt_frames"])
        for message in result["corrupt_frames"]:
            bar.write(f"warning: skipped frame {message}")
        bar.report(frames=summary.frames)
    summary.seconds = time.perf_counter() - t0
    return summary
