"""A ScanNet .sens writer for the tests, written from the format (version 4, little endian, no padding):

header: uint32 version, uint64 n + n bytes sensor name, 4 x float32[16] (color K, color extrinsics, depth K,
depth extrinsics), int32 color compression, int32 depth compression, uint32 color W, H, depth W, H,
float32 depth shift, uint64 frame count; then per frame: float32[16] camera-to-world, uint64 color and depth
timestamps, uint64 color and depth byte counts, the color bytes, the depth bytes.
"""
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

FRAMES = Path(__file__).resolve().parents[2] / "data" / "7scenes-redkitchen"


def jpeg_bytes(rgb: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_sens(path: Path, frames: list, K_color: np.ndarray, K_depth: np.ndarray, name: str = "StructureSensor",
               depth_shift: float = 1000.0) -> Path:
    """frames: dicts with color (H, W, 3) uint8, depth (h, w) uint16, pose (4, 4). Color JPEG, depth zlib."""
    ch, cw = frames[0]["color"].shape[:2]
    dh, dw = frames[0]["depth"].shape
    with open(path, "wb") as f:
        f.write(struct.pack("<I", 4))
        f.write(struct.pack("<Q", len(name)) + name.encode())
        for m in (K_color, np.eye(4), K_depth, np.eye(4)):
            f.write(struct.pack("<16f", *np.asarray(m, dtype=np.float32).reshape(-1)))
        f.write(struct.pack("<ii", 2, 1))  # jpeg, zlib_ushort
        f.write(struct.pack("<4If", cw, ch, dw, dh, depth_shift))
        f.write(struct.pack("<Q", len(frames)))
        for i, fr in enumerate(frames):
            color = jpeg_bytes(fr["color"])
            depth = zlib.compress(fr["depth"].astype("<u2").tobytes())
            f.write(struct.pack("<16f", *np.asarray(fr["pose"], dtype=np.float32).reshape(-1)))
            f.write(struct.pack("<4Q", 1000 * i, 1000 * i + 7, len(color), len(depth)))
            f.write(color)
            f.write(depth)
    return path


def kitchen_frames(count: int = 20, color_scale: int = 2):
    """Real 7-Scenes frames: color upsampled `color_scale` x (a separate color camera), depth uint16 mm (0 = hole),
    poses; and the 4x4 color and depth intrinsics that go with them."""
    K = np.loadtxt(FRAMES / "camera-intrinsics.txt")
    names = sorted(p.name.split(".")[0] for p in FRAMES.glob("frame-*.depth.png"))[:count]
    frames = []
    for n in names:
        color = np.asarray(Image.open(FRAMES / f"{n}.color.jpg").convert("RGB"))
        big = np.asarray(Image.fromarray(color).resize((color.shape[1] * color_scale, color.shape[0] * color_scale),
                                                       Image.BILINEAR))
        depth = np.asarray(Image.open(FRAMES / f"{n}.depth.png")).astype(np.uint16)
        depth = np.where(depth == 65535, 0, depth).astype(np.uint16)
        frames.append({"color": big, "small_color": color, "depth": depth, "pose": np.loadtxt(FRAMES / f"{n}.pose.txt")})
    K_depth = np.eye(4)
    K_depth[:3, :3] = K
    K_color = np.eye(4)
    K_color[:2, :2] = K[:2, :2] * color_scale
    K_color[:2, 2] = color_scale * (K[:2, 2] + 0.5) - 0.5  # pixel centres at integer coordinates
    return frames, K_color, K_depth
