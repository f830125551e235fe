"""Time per detection fine-tuning iteration (VoteNet on the SR-UNet), and where it goes.

Builds the detector of configs/detection_synthetic.yaml (optionally at other widths), takes a batch of training samples
of a synthetic world's scenes (augmented and cropped to --max-voxels, as the benchmark trains), and times --repeats
iterations in this process after one warm-up: backbone forward, the heads (seeds, votes, aggregation, proposals;
their farthest-point sampling separately), loss, backward and optimiser step. Medians, in seconds.

    python benchmarks/bench_detection.py --data runs/transfer/world --threads 1 --repeats 7
"""
from __future__ import annotations

import ppkt  # noqa: F401  (first: the OpenMP wait policy before torch loads)

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from ppkt.config import load_config
from ppkt.data.scenes import list_scenes
from ppkt.detection import pointops
from ppkt.detection.coder import mean_sizes
from ppkt.detection.dataset import DetScenes, collate_detection
from ppkt.detection.loss import votenet_loss
from ppkt.train.detect import build_detector
from ppkt.train.detect_config import DetectionConfig

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/transfer/world", help="a synthetic world (ppkt synth / bench-transfer)")
    p.add_argument("--channels", type=int, nargs=8, default=[8, 16, 32, 64, 64, 32, 24, 24])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--max-voxels", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(ROOT / "configs" / "detection_synthetic.yaml",
                      [f"data.root={args.data}", f"model.channels=[{','.join(map(str, args.channels))}]"], DetectionConfig)
    data = DetScenes(list_scenes(args.data, "train")[:8], "synthetic", cfg.data.voxel_size, train=True,
                     max_voxels=args.max_voxels)
    torch.manual_seed(0)
    model = build_detector(cfg, data.classes.num_classes, mean_sizes(data.truth, data.classes.num_classes))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fps_seconds = []
    original_fps = pointops.farthest_point_sample

    def timed_fps(*a, **k):
        t = time.perf_counter()
        out = original_fps(*a, **k)
        fps_seconds.append(time.perf_counter() - t)
        return out

    import ppkt.detection.votenet as votenet_module
    votenet_module.farthest_point_sample = timed_fps  # count the sampling inside the forward pass
    rows = []
    for i in range(args.repeats + 1):
        batch = collate_detection([data[(j % len(data), i)] for j in range(i * args.batch, (i + 1) * args.batch)])
        fps_seconds.clear()
        t0 = time.perf_counter()
        voxel_feats = model.backbone(batch.feats, batch.coords, batch.batch_size)
        t1 = time.perf_counter()
        del voxel_feats
        t2 = time.perf_counter()
        out = model(batch.feats, batch.coords, batch.xyz, batch.offsets)
        t3 = time.perf_counter()
        loss = votenet_loss(out, batch.boxes, model.mean_size, model.num_heading_bins)["loss"]
        t4 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t5 = time.perf_counter()
        if i:  # the first is a warm-up
            rows.append({"voxels": int(batch.coords.shape[0]), "backbone_fwd": t1 - t0, "fwd": t3 - t2,
                         "fps": sum(fps_seconds), "loss": t4 - t3, "bwd_step": t5 - t4, "iteration": t5 - t2})
    votenet_module.farthest_point_sample = original_fps
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(json.dumps({"threads": args.threads, "batch": args.batch, "max_voxels": args.max_voxels,
                      "channels": args.channels, "load_avg_start": os.getloadavg()[0], "repeats": args.repeats,
                      "median": {k: round(v, 4) for k, v in med.items()},
                      "heads_fwd_without_backbone": round(med["fwd"] - med["backbone_fwd"], 4)}, indent=1))


if __name__ == "__main__":
    main()
