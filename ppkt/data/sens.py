"""ScanNet ``.sens`` files, streamed: the header, a frame index built in one pass, and frames read on demand.

Layout (version 4, little endian, no padding; ScanNet's SensReader documents it):

    header   uint32 version (4) | uint64 n | n bytes sensor name
             float32[16] color intrinsics | float32[16] color extrinsics (4x4, row-major)
             float32[16] depth intrinsics | float32[16] depth extrinsics
             int32 color compression (-1 unknown, 0 raw, 1 png, 2 jpeg)
             int32 depth compression (-1 unknown, 0 raw_ushort, 1 zlib_ushort, 2 occi_ushort)
             uint32 color width, height | uint32 depth width, height | float32 depth shift | uint64 frame count
    frame    float32[16] camera-to-world pose | uint64 color timestamp | uint64 depth timestamp
             uint64 color bytes c | uint64 depth bytes d | c bytes color | d bytes depth

Opening a file reads only the header and the 96-byte frame headers (seeking over the image data), so memory
does not grow with the file; ``reader[i]`` then seeks to frame i. Every frame's extent is checked against the
file size while indexing, so a truncated file fails at open with the file and the frame named.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np
from PIL import Image

from ppkt.data.frames import FrameError

__all__ = ["SensError", "SensHeader", "SensFrame", "SensReader", "COLOR_COMPRESSION", "DEPTH_COMPRESSION"]

COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
VERSION = 4
_CALIB = struct.Struct("<64f")  # color intrinsics, color extrinsics, depth intrinsics, depth extrinsics
_TAIL = struct.Struct("<ii4IfQ")  # compressions, sizes, depth shift, frame count
_FRAME = struct.Struct("<16f4Q")  # pose, timestamps, byte counts
_MAX_NAME = 4096  # bytes; a longer sensor name means the file is not a .sens


class SensError(FrameError):
    """A .sens file that cannot be read; the message names the file (and the frame, where there is one)."""


@dataclass(frozen=True)
class SensHeader:
    """The header of a .sens file. Matrices are (4, 4) float64; sizes in pixels; depth_shift: units per metre."""

    version: int
    sensor_name: str
    intrinsic_color: np.ndarray
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: str
    depth_compression: str
    color_size: tuple  # (W, H)
    depth_size: tuple  # (W, H)
    depth_shift: float
    num_frames: int


@dataclass
class SensFrame:
    """One decoded frame: color (Hc, Wc, 3) uint8 RGB, depth (Hd, Wd) uint16 raw units (metres = raw / depth_shift),
    pose (4, 4) float64 camera-to-world (may hold -inf: ScanNet's mark of a frame without a valid pose)."""

    index: int
    color: np.ndarray
    depth: np.ndarray
    pose: np.ndarray
    timestamp_color: int
    timestamp_depth: int

    @property
    def pose_valid(self) -> bool:
        return bool(np.isfinite(self.pose).all())


def _read_exact(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SensError(f"{path}: file is truncated: it ends inside {what} (needed {n} bytes, got {len(data)})")
    return data


class SensReader:
    """Random access to the frames of one .sens file; ``len(reader)`` frames, ``reader[i]`` -> :class:`SensFrame`.

    The file stays open (one handle) until :meth:`close` or the end of a ``with`` block. Poses of all frames are
    read while indexing and are available as ``reader.poses`` (N, 4, 4) float64 without decoding any image.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise SensError(f"{self.path}: file not found")
        self._file: Optional[BinaryIO] = open(self.path, "rb")
        try:
            self.header = self._read_header()
            self._offsets, self._sizes, self.poses, self._stamps = self._index()
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------------------------- reading
    def _read_header(self) -> SensHeader:
        f, path = self._file, self.path
        (version,) = struct.unpack("<I", _read_exact(f, 4, path, "the header"))
        if version != VERSION:
            raise SensError(f"{path}: not a ScanNet .sens file of version {VERSION} (version field is {version})")
        (name_len,) = struct.unpack("<Q", _read_exact(f, 8, path, "the header"))
        if name_len > _MAX_NAME:
            raise SensError(f"{path}: corrupt header: sensor name of {name_len} bytes")
        name = _read_exact(f, name_len, path, "the header").decode("utf-8", errors="replace")
        calib = np.array(_CALIB.unpack(_read_exact(f, _CALIB.size, path, "the header")), dtype=np.float64).reshape(4, 4, 4)
        c_comp, d_comp, cw, ch, dw, dh, shift, count = _TAIL.unpack(_read_exact(f, _TAIL.size, path, "the header"))
        if c_comp not in COLOR_COMPRESSION or d_comp not in DEPTH_COMPRESSION:
            raise SensError(f"{path}: corrupt header: unknown compression types (color {c_comp}, depth {d_comp})")
        if min(cw, ch, dw, dh) == 0 or not (np.isfinite(shift) and shift > 0):
            raise SensError(f"{path}: corrupt header: color {cw}x{ch}, depth {dw}x{dh}, depth shift {shift}")
        return SensHeader(version, name, calib[0], calib[1], calib[2], calib[3], COLOR_COMPRESSION[c_comp],
                          DEPTH_COMPRESSION[d_comp], (cw, ch), (dw, dh), float(shift), int(count))

    def _index(self):
        """One pass over the frame headers: offsets and sizes of the color and depth data, poses, timestamps.

        Lists grow frame by frame, so a corrupt frame count fails at the end of the file, not in an allocation.
        """
        f, path, n = self._file, self.path, self.header.num_frames
        size = self.path.stat().st_size
        pos = f.tell()
        offsets, sizes, poses, stamps = [], [], [], []
        for i in range(n):
            raw = f.read(_FRAME.size)
            if len(raw) != _FRAME.size:
                raise SensError(f"{path}: file is truncated at frame {i} of {n}: it ends inside the frame header "
                                f"(byte {pos + len(raw)} of {size})")
            values = _FRAME.unpack(raw)
            c_bytes, d_bytes = values[18], values[19]
            data_start = pos + _FRAME.size
            end = data_start + c_bytes + d_bytes
            if end > size:
                raise SensError(f"{path}: file is truncated at frame {i} of {n}: its color and depth data "
                                f"({c_bytes} + {d_bytes} bytes from byte {data_start}) run past the end of the file "
                                f"({size} bytes)")
            poses.append(values[:16])
            stamps.append(values[16:18])
            offsets.append((data_start, data_start + c_bytes))
            sizes.append((c_bytes, d_bytes))
            pos = f.seek(end)
        return (np.array(offsets, dtype=np.int64).reshape(n, 2), np.array(sizes, dtype=np.int64).reshape(n, 2),
                np.array(poses, dtype=np.float64).reshape(n, 4, 4), np.array(stamps, dtype=np.uint64).reshape(n, 2))

    def __len__(self) -> int:
        return self.header.num_frames

    def __getitem__(self, i: int) -> SensFrame:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range: {self.path} has {n} frames")
        i %= n
        if self._file is None:
            raise SensError(f"{self.path}: reader is closed")
        f = self._file
        f.seek(int(self._offsets[i, 0]))
        c_raw = _read_exact(f, int(self._sizes[i, 0]), self.path, f"the color data of frame {i}")
        d_raw = _read_exact(f, int(self._sizes[i, 1]), self.path, f"the depth data of frame {i}")
        return SensFrame(i, self._decode_color(c_raw, i), self._decode_depth(d_raw, i), self.poses[i].copy(),
                         int(self._stamps[i, 0]), int(self._stamps[i, 1]))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # -------------------------------------------------------------------------------- decoding
    def _decode_color(self, raw: bytes, i: int) -> np.ndarray:
        h = self.header
        w, hgt = h.color_size
        where = f"{self.path}: frame {i}"
        if h.color_compression == "raw":
            if len(raw) != w * hgt * 3:
                raise SensError(f"{where}: raw color holds {len(raw)} bytes, expected {w}x{hgt}x3 = {w * hgt * 3}")
            return np.frombuffer(raw, dtype=np.uint8).reshape(hgt, w, 3).copy()
        if h.color_compression not in ("jpeg", "png"):
            raise SensError(f"{where}: color compression {h.color_compression!r} is not supported (jpeg, png, raw are)")
        try:
            img = Image.open(io.BytesIO(raw))
            img.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise SensError(f"{where}: corrupt {h.color_compression} color image ({err})") from None
        color = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if color.shape[:2] != (hgt, w):
            raise SensError(f"{where}: color image is {color.shape[1]}x{color.shape[0]}, header says {w}x{hgt}")
        return color

    def _decode_depth(self, raw: bytes, i: int) -> np.ndarray:
        h = self.header
        w, hgt = h.depth_size
        where = f"{self.path}: frame {i}"
        if h.depth_compression == "zlib_ushort":
            try:
                raw = zlib.decompress(raw)
            except zlib.error as err:
                raise SensError(f"{where}: corrupt zlib depth data ({err})") from None
        elif h.depth_compression != "raw_ushort":
            raise SensError(f"{where}: depth compression {h.depth_compression!r} is not supported "
                            "(zlib_ushort and raw_ushort are)")
        if len(raw) != w * hgt * 2:
            raise SensError(f"{where}: depth holds {len(raw)} bytes, expected {w}x{hgt} uint16 = {w * hgt * 2}")
        return np.frombuffer(raw, dtype="<u2").reshape(hgt, w).copy()

    # -------------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "SensReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        h = self.header
        return (f"SensReader({str(self.path)!r}, frames={len(self)}, color {h.color_size[0]}x{h.color_size[1]} "
                f"{h.color_compression}, depth {h.depth_size[0]}x{h.depth_size[1]} {h.depth_compression})")
