"""Speed and memory of the ScanNet .sens reader and of `ppkt prepare scannet`.

Writes .sens files of ScanNet's sizes (color 1296x968 JPEG, depth 640x480 zlib) from the bundled real frames
(the test's writer, tests/helpers/sens_writer.py), then measures, each as the median of --repeats runs:
- indexing (open) time, and decoding frames/s (color + depth) of the reader streaming every frame;
- peak memory of a process that streams a small file and a large one (--big-frames): it must not grow with the file;
- the exporter's frames/s (`--every 1`, one worker).

    python benchmarks/bench_sens.py --frames 300 --big-frames 2000 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from sens_writer import kitchen_frames, write_sens  # noqa: E402

from ppkt.data.sens import SensReader  # noqa: E402
from ppkt.prepare.scannet_frames import export_scans  # noqa: E402


def make_sens(path: Path, n: int) -> Path:
    """n frames cycling over the 20 real frames, color resized to ScanNet's 1296x968."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, K_color, K_depth = kitchen_frames(count=20, color_scale=1)
    for f in frames:
        f["color"] = np.asarray(Image.fromarray(f["color"]).resize((1296, 968), Image.BILINEAR))
    K_color[0] *= 1296 / 640
    K_color[1] *= 968 / 480
    return write_sens(path, [frames[i % len(frames)] for i in range(n)], K_color, K_depth)


def stream_memory(path: Path) -> dict:
    """RSS (MiB) of a fresh process after importing the reader, and its peak (VmHWM) after decoding every frame."""
    code = ("import sys\n"
            "def mem(key):\n"
            "    line = next(l for l in open('/proc/self/status') if l.startswith(key))\n"
            "    return int(line.split()[1]) / 1024\n"
            "from ppkt.data.sens import SensReader\n"
            "base = mem('VmRSS:')\n"
            "for f in SensReader(sys.argv[1]): pass\n"
            "print(base, mem('VmHWM:'))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    base, peak = map(float, out.stdout.split())
    return {"after_import_mib": base, "peak_mib": peak, "growth_mib": peak - base}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--big-frames", type=int, default=2000, help="frames of the large file of the memory check")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = make_sens(tmp / "scans" / "scene0000_00" / "scene0000_00.sens", args.frames)
        big = make_sens(tmp / "big" / "scene0001_00.sens", args.big_frames)
        index_s, decode_fps, export_fps = [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            r = SensReader(small)
            index_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _f in r:
                pass
            decode_fps.append(len(r) / (time.perf_counter() - t))
            r.close()
            out = tmp / f"out{len(export_fps)}"
            t = time.perf_counter()
            summary = export_scans(tmp / "scans", out, every=1, workers=1, progress=False)
            export_fps.append(summary.frames / (time.perf_counter() - t))
        memory = {"small": stream_memory(small), "big": stream_memory(big)}
        result = {
            "frames": {"small": args.frames, "big": args.big_frames}, "file_mb": {"small": small.stat().st_size / 2**20, "big": big.stat().st_size / 2**20},
            "index_s_median": statistics.median(index_s),
            "reader_frames_per_s_median": statistics.median(decode_fps), "reader_runs": decode_fps,
            "export_frames_per_s_median": statistics.median(export_fps), "export_runs": export_fps,
            "streaming_memory": memory,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
