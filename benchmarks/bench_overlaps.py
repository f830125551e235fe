"""Speed of `ppkt overlaps` (frame-pair mining for PointContrast) on a ScanNet scan of 100 frames.

Writes a .sens file of ScanNet's sizes cycling over the bundled real 7-Scenes frames (benchmarks/bench_sens.py),
exports it with `ppkt prepare scannet --every 1` (ScanNet's exported layout: color/, depth/ 640x480, pose/,
intrinsic/), then mines the pairs --repeats times in this process and reports the median seconds.

    python benchmarks/bench_overlaps.py --frames 100 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sens import make_sens  # noqa: E402

from ppkt.data.frames import find_frame_folders, open_frame_folder  # noqa: E402
from ppkt.data.overlap import mine_folder  # noqa: E402
from ppkt.prepare.scannet_frames import export_scans  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--min-overlap", type=float, default=0.3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_sens(tmp / "scans" / "scene0000_00" / "scene0000_00.sens", args.frames)
        export_scans(tmp / "scans", tmp / "frames", every=1, workers=1, progress=False)
        folder = open_frame_folder(find_frame_folders(tmp / "frames")[0])
        seconds, pairs = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            found, skipped = mine_folder(folder, "scene0000_00", args.min_overlap)
            seconds.append(time.perf_counter() - t)
            pairs.append(len(found))
    print(json.dumps({"frames": len(folder), "depth": "640x480", "pairs": pairs[0], "skipped": skipped,
                      "seconds": seconds, "median_s": statistics.median(seconds)}, indent=1))


if __name__ == "__main__":
    main()
