"""Time PPKT pretraining iterations on CPU (or CUDA): the demo config, and SR-UNet34 at batch 2.

Each setting runs warm-up + N iterations of the real training step (teacher forward, student
forward/backward, SGD step) on the bundled real frames; prints the median seconds per iteration, the
median data-preparation time per batch, the voxels per batch and the peak RSS.

With --cache, each setting runs with augment.resize=[1,1] (what a teacher cache needs), first writes the teacher
cache of its frames (`ppkt.data.teacher_cache`, timed), then times on every batch both the live-teacher step and the
cached step (same process, same batches, alternating which goes first) and prints both medians and their ratio.

    python benchmarks/bench_pretrain.py [--iterations 7] [--threads 2] [--cache]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ppkt.config import load_config
from ppkt.data.pairs import PixelPointFrames, collate_pairs
from ppkt.data.teacher_cache import TeacherCache, needs_flips, write_teacher_cache
from ppkt.train.pretrain import build_model, trainable
from ppkt.train.sampler import IterationBatchSampler

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "data" / "7scenes-redkitchen"
SETTINGS = {
    "demo (SR-UNet14 small, EfficientNet-Lite0, 240x320, 5 cm, batch 4)": (ROOT / "configs" / "pretrain_demo.yaml", []),
    "SR-UNet34 + ResNet-50 layer4, 480x640, 2.5 cm, batch 2 (paper setting)": (
        ROOT / "configs" / "pretrain_scannet.yaml",
        [f"data.roots=[{FRAMES}]", "data.layout=7scenes", "teacher.weights=none", "train.batch_size=2"],
    ),
}


def bench(config: Path, overrides: list[str], iterations: int, device: torch.device, cache: bool = False) -> dict:
    cfg = load_config(config, overrides + (["augment.resize=[1,1]"] if cache else []))
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.SGD(trainable(model).parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    result, teacher_cache = {}, None
    if cache:
        folder = tempfile.mkdtemp(prefix="ppkt-bench-cache-")
        frames = PixelPointFrames(cfg.data, cfg.augment).folders
        t0 = time.perf_counter()
        write_teacher_cache(folder, frames, model.teacher, cfg.data.image_size, needs_flips(cfg.augment))
        result["cache_s_per_frame"] = (time.perf_counter() - t0) / sum(len(f) for f in frames)
        teacher_cache = TeacherCache(folder)
        teacher_cache.check_teacher(model.teacher)
    data = PixelPointFrames(cfg.data, cfg.augment, teacher_cache)
    sampler = iter(IterationBatchSampler(len(data), cfg.train.batch_size, cfg.train.seed, 0, iterations + 1))

    def step(batch, it: int) -> dict:
        """One training step (the stages of PPKT.forward, then backward and SGD), timed stage by stage."""
        marks = [time.perf_counter()]

        def mark() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

        f2d = model.teacher_features(batch)
        mark()
        f3d = model.student(batch.feats, batch.coords, batch.batch_size)
        mark()
        loss = model.pair_loss(f2d, f3d, batch, torch.Generator().manual_seed(it))
        mark()
        optimizer.zero_grad()
        loss.backward()  # the heads' share of the backward pass is small: counted with the student
        mark()
        optimizer.step()
        mark()
        d = [b - a for a, b in zip(marks, marks[1:])]
        return {"teacher_s": d[0], "student_s": d[1] + d[3], "loss_s": d[2], "optimiser_s": d[4], "step_s": sum(d)}

    live_steps, cached_times, data_times, voxels = [], [], [], []
    for it in range(iterations + 1):
        t0 = time.perf_counter()
        batch = collate_pairs([data[key] for key in next(sampler)]).to(device)
        t1 = time.perf_counter()
        if cache and it % 2:
            cached = step(batch, it)["step_s"]
        live = step(replace(batch, teacher_features=None), it)
        if cache and not it % 2:
            cached = step(batch, it)["step_s"]
        if it > 0:  # the first iteration is a warm-up
            data_times.append(t1 - t0)
            live_steps.append(live)
            voxels.append(batch.coords.shape[0])
            if cache:
                cached_times.append(cached)
    if cache:
        result["cached_step_s"] = statistics.median(cached_times)
    stages = {key: statistics.median(s[key] for s in live_steps) for key in live_steps[0]}
    return {
        **stages,
        "data_s": statistics.median(data_times),
        "frames_per_s": cfg.train.batch_size / stages["step_s"],  # data prepared beside the step (train.workers >= 1)
        "voxels": int(statistics.median(voxels)),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        **result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", action="store_true", help="also time the step with a teacher cache (resize [1, 1])")
    parser.add_argument("--only", type=int, default=None, metavar="I", help="run only setting I (0: demo, 1: paper)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    print(f"device {device}, {args.threads} threads, median of {args.iterations} iterations after 1 warm-up"
          + (", augment.resize=[1,1] (teacher cache)" if args.cache else ""))
    results = {}
    for i, (name, (config, overrides)) in enumerate(SETTINGS.items()):
        if args.only is not None and i != args.only:
            continue
        r = results[name] = bench(config, overrides, args.iterations, device, args.cache)
        print(f"{name}\n  step {r['step_s']:.3f} s/it (teacher {r['teacher_s']:.3f}, student fwd+bwd {r['student_s']:.3f}, "
              f"loss {r['loss_s']:.3f}, SGD {r['optimiser_s']:.3f}), data {r['data_s']:.3f} s/batch, "
              f"{r['voxels']} voxels/batch, peak RSS {r['peak_rss_gib']:.2f} GiB")
        if args.cache:
            print(f"  cached teacher: step {r['cached_step_s']:.3f} s/it, speed-up x{r['step_s'] / r['cached_step_s']:.2f} "
                  f"(writing the cache: {r['cache_s_per_frame']:.3f} s/frame)")

    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "iterations": args.iterations,
                                               "settings": results}, indent=2))


if __name__ == "__main__":
    main()
