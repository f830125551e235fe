"""`ppkt predict` on a 5-million-point scan: wall time and peak resident memory of the whole command (medians of
--repeats runs, each a fresh process), against the target of 4 GiB on 2 CPU cores.

    python benchmarks/bench_predict.py [--out runs/bench_predict] [--repeats 3] [--threads 2]

The scan: rooms of a synthetic world (points every 2.5 cm, colour) laid side by side on a 7 m grid until 5 million
points (25 rooms, 42 x 33 m); the model: SR-UNet14 at the configs' widths, fine-tuned for one iteration (time and
memory do not depend on the weights). Measure on a quiet machine: nothing else CPU-heavy beside it.
"""
from __future__ import annotations

import ppkt  # noqa: F401  (first: the OpenMP wait policy before torch loads)

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def building(world: Path, points: int, out: Path) -> Path:
    from ppkt.data.ply import write_ply

    coords, colors, n, i = [], [], 0, 0
    rooms = sorted((world / "scenes").iterdir())
    while n < points:
        room = rooms[i % len(rooms)]
        c = np.load(room / "coord.npy").astype(np.float32)
        coords.append(c - c.min(0) + np.array([(i % 6) * 7.0, (i // 6) * 7.0, 0], np.float32))
        colors.append(np.load(room / "color.npy"))
        n, i = n + len(c), i + 1
    return write_ply(out, np.concatenate(coords)[:points], np.concatenate(colors)[:points])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_predict")
    p.add_argument("--points", type=int, default=5_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    out = Path(args.out)
    from ppkt.config import load_config
    from ppkt.synthetic.dataset import write_dataset
    from ppkt.train.finetune import finetune
    from ppkt.train.finetune_config import FinetuneConfig

    world = write_dataset(out / "world", scenes=25, frames_per_scene=1, seed=0, point_spacing=0.025, compact=True,
                          workers=2, progress=False)
    run = out / "model"
    if not (run / "checkpoints" / "last.pt").is_file():
        finetune(load_config(Path(__file__).resolve().parents[1] / "configs" / "finetune_synthetic.yaml", [
            f"data.root={world}", f"data.classes={world / 'classes.json'}", "train.iterations=1", "train.eval_every=0",
            "data.val_split=''", "train.workers=0", f"train.out_dir={run}"], FinetuneConfig))
    scan = out / "building.ply"
    if not scan.is_file():
        building(world, args.points, scan)
    seconds, peaks = [], []
    for r in range(args.repeats):
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "ppkt.cli", "predict", "--checkpoint",
                                 str(run / "checkpoints" / "last.pt"), str(scan), "--out", str(out / "pred"),
                                 "--threads", str(args.threads), "--quiet", "--no-preview"], stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds.append(time.perf_counter() - t)
        peaks.append(usage.ru_maxrss / 2**20)  # KiB -> GiB
        if status != 0:
            raise SystemExit(f"ppkt predict failed (status {status})")
        print(f"run {r + 1}: {seconds[-1]:.1f} s, peak resident memory {peaks[-1]:.2f} GiB", flush=True)
    if not seconds:
        return  # --repeats 0: only the scan and the model made
    load = os.getloadavg()[0]
    print(f"{args.points} points, {args.threads} threads: median {statistics.median(seconds):.1f} s, peak resident "
          f"memory median {statistics.median(peaks):.2f} GiB (max {max(peaks):.2f}; target 4 GiB); load average at "
          f"the end {load:.1f}")


if __name__ == "__main__":
    main()
