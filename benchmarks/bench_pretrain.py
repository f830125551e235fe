"""Time PPKT pretraining iterations on CPU (or CUDA): the demo config, and SR-UNet34 at batch 2.

Each setting runs warm-up + N iterations of the real training step (teacher forward, student
forward/backward, SGD step) on the bundled real frames; prints the median seconds per iteration, the
median data-preparation time per batch, the voxels per batch and the peak RSS.

    python benchmarks/bench_pretrain.py [--iterations 7] [--threads 2]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from ppkt.config import load_config
from ppkt.data.pairs import FramePairs, collate_pairs
from ppkt.train.pretrain import build_model, trainable
from ppkt.train.sampler import IterationBatchSampler

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "data" / "7scenes-redkitchen"
SETTINGS = {
    "demo (SR-UNet14 narrow, EfficientNet-Lite0, 240x320, 5 cm, batch 4)": (ROOT / "configs" / "pretrain_demo.yaml", []),
    "SR-UNet34 + ResNet-50 layer4, 480x640, 2.5 cm, batch 2 (paper setting)": (
        ROOT / "configs" / "pretrain_scannet.yaml",
        [f"data.roots=[{FRAMES}]", "data.layout=7scenes", "teacher.weights=none", "train.batch_size=2"],
    ),
}


def bench(config: Path, overrides: list[str], iterations: int, device: torch.device) -> dict:
    cfg = load_config(config, overrides)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.SGD(trainable(model).parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    data = FramePairs(cfg.data, cfg.augment)
    sampler = iter(IterationBatchSampler(len(data), cfg.train.batch_size, cfg.train.seed, 0, iterations + 1))
    step_times, data_times, voxels = [], [], []
    for it in range(iterations + 1):
        t0 = time.perf_counter()
        batch = collate_pairs([data[key] for key in next(sampler)]).to(device)
        t1 = time.perf_counter()
        loss = model(batch, torch.Generator().manual_seed(it))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if it > 0:  # the first iteration is a warm-up
            data_times.append(t1 - t0)
            step_times.append(t2 - t1)
            voxels.append(batch.coords.shape[0])
    return {
        "step_s": statistics.median(step_times),
        "data_s": statistics.median(data_times),
        "voxels": int(statistics.median(voxels)),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    print(f"device {device}, {args.threads} threads, median of {args.iterations} iterations after 1 warm-up")
    for name, (config, overrides) in SETTINGS.items():
        r = bench(config, overrides, args.iterations, device)
        print(f"{name}\n  step {r['step_s']:.3f} s/it (fwd+bwd+SGD), data {r['data_s']:.3f} s/batch, "
              f"{r['voxels']} voxels/batch, peak RSS {r['peak_rss_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
