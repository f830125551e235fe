"""The detection benchmark: VoteNet on the SR-UNet fine-tuned from scratch and from the PPKT backbone
on the synthetic world's boxes, paired by seed, with a 95 % interval on mAP@0.25 (and mAP@0.5 beside it).

It uses the segmentation benchmark's stages (world and PPKT backbone from ppkt.benchmark.transfer, reused from its
folder's results.json when their settings match) and seed rounds; its runs are records of stage "detection" named
"detection/<cell>/<init>_s<seed>". Scratch is also evaluated at 80 % of its iterations (the convergence check).
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Optional

from ppkt.benchmark.results import Results
from ppkt.benchmark.transfer import (CONFIGS, Cell, Plan, finetune_job, provenance, stage_finetune, stage_pretrain,
                                     stage_world)

STAGE, SCORE = "detection", "map25"
DET_FULL = Cell("det_full", "detection, 100 % of the scenes", (), 1.0)


def det_fraction(fraction: float) -> Cell:
    return Cell(f"det_f{fraction:g}", f"detection, {100 * fraction:g} % of the scenes",
                (f"data.label_fraction={fraction}",), fraction)


# over configs/detection_synthetic.yaml: the benchmark's fine-tuning recipe; every proposal is scored (no objectness
# threshold: short runs are not confident yet, and boxes ranked last never lower all-point AP)
RECIPE = ("optim.name=adamw", "optim.lr=0.002", "optim.weight_decay=0.0001", "optim.schedule=cosine", "optim.warmup=20",
          "eval.min_score=0.0")


def detection_config(plan: Plan, world: Path, cell: Cell, seed: int, backbone: Optional[Path], init: str):
    from ppkt.config import load_config
    from ppkt.train.detect_config import DetectionConfig

    eval_every = 0 if backbone else max(1, plan.finetune_iterations * 4 // 5)
    return load_config(CONFIGS / "detection_synthetic.yaml", [
        f"data.root={world}", "data.classes=synthetic", f"data.max_voxels={plan.max_voxels}", f"train.seed={seed}",
        f"train.iterations={plan.finetune_iterations}", f"train.eval_every={eval_every}", "train.checkpoint_every=100000",
        "train.eval_ply=false", "eval.ply=false", f"train.threads={max(1, plan.threads // plan.jobs)}", "train.workers=0",
        f"train.out_dir={plan.out / STAGE / cell.key / f'{init}_s{seed}'}", f"model.pretrained={backbone or 'null'}",
        *([f"model.channels=[{','.join(map(str, plan.channels))}]"] if plan.channels else []),
        *plan.finetune_overrides, *cell.overrides], DetectionConfig)


def detection_jobs(plan: Plan, results: Results, world: Path, backbone: Path, cell: Cell, seed: int) -> list:
    """The runs of one seed of a cell not yet in results: (name, settings, config, labels) each."""
    return [job for init, weights in (("scratch", None), ("ppkt", backbone))
            for job in finetune_job(plan, results, world, cell, seed, init, weights, detection_config, STAGE)]


def run_detection(cfg) -> dict:
    """Fine-tune one detector (from nothing) and return its scores: final val mAP@0.25 / @0.5, the val mAP@0.25 curve
    [(iteration, mAP)] and the median seconds per training iteration (runs in a worker process)."""
    from ppkt.train.detect import finetune_detection

    t = time.perf_counter()
    out = finetune_detection(cfg, overwrite=True)
    final = json.loads((out / "eval" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["iteration"], r["val_map25"]) for r in rows if "val_map25" in r]
    steps = [r["iteration_s"] for r in rows if "iteration_s" in r]
    return {SCORE: final["mAP@0.25"], "map50": final["mAP@0.5"], "curve": curve,
            "s_per_iteration": statistics.median(steps) if steps else None, **provenance(time.perf_counter() - t)}


def run(plan: Plan) -> Results:
    """World and PPKT backbone (reused), then the detection cells in seed rounds; returns the results."""
    plan.out.mkdir(parents=True, exist_ok=True)
    results = Results(plan.out / "results.json")
    world = stage_world(plan, results)
    backbone = stage_pretrain(plan, results, world)
    stage_finetune(plan, results, world, backbone, detection_jobs, run_detection, STAGE, SCORE)
    return results
