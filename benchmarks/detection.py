"""The detection benchmark (`make bench-detection`): VoteNet fine-tuned from scratch and from the PPKT backbone on the
synthetic world's boxes, paired by seed, with 95 % intervals on mAP@0.25 and mAP@0.5.

    python benchmarks/detection.py run --out runs/detection       # world, PPKT backbone, detection runs; resumes
    python benchmarks/detection.py report --out runs/detection    # the section of docs/detection.md again

See ppkt/benchmark/detection.py. The world is the transfer benchmark's (same settings); the student is SR-UNet14 at
half the configs' widths (HALF_WIDTHS), for time, so its PPKT backbone is pretrained in this folder.
"""
from __future__ import annotations

import ppkt  # noqa: F401  (first: the OpenMP wait policy before torch loads)

import argparse
from pathlib import Path

from ppkt.benchmark.detection import DET_FULL, RECIPE, SCORE, STAGE, det_fraction, run
from ppkt.benchmark.report import write_detection_report
from ppkt.benchmark.results import Results
from ppkt.benchmark.transfer import HALF_WIDTHS, Plan

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", choices=("run", "report"), default="run")
    p.add_argument("--out", default="runs/detection", help="folder of the runs and results.json")
    p.add_argument("--page", default=str(ROOT / "docs" / "detection.md"), help="the page whose benchmark section is written")
    p.add_argument("--fractions", type=float, nargs="*", default=[0.2], help="few-label cells: shares of the scenes")
    p.add_argument("--no-full", action="store_true", help="leave out the all-labels cell")
    p.add_argument("--seeds", type=int, default=3, help="paired seeds per cell at least")
    p.add_argument("--max-seeds", type=int, default=12, help="more pairs while the interval is wider than the target")
    p.add_argument("--target-halfwidth", type=float, default=3.0, help="mAP@0.25 points")
    p.add_argument("--budget-minutes", type=float, default=90.0, help="wall clock (world, pretraining, detection)")
    p.add_argument("--iterations", type=int, default=1400, help="fine-tuning iterations per run")
    p.add_argument("--max-voxels", type=int, default=8000, help="training crop per scene")
    p.add_argument("--channels", type=int, nargs=8, default=list(HALF_WIDTHS), help="the student's 8 widths")
    p.add_argument("--scenes", type=int, default=120)
    p.add_argument("--frames-per-scene", type=int, default=8)
    p.add_argument("--point-spacing", type=float, default=0.025)
    p.add_argument("--pretrain-iterations", type=int, default=600)
    p.add_argument("--jobs", type=int, default=2, help="runs at once")
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all (split over --jobs)")
    args = p.parse_args()
    out = Path(args.out)
    if args.command == "run":
        cells = [*(det_fraction(f) for f in args.fractions), *([] if args.no_full else [DET_FULL])]
        plan = Plan(out=out, cells=cells, seeds=args.seeds, scenes=args.scenes, frames_per_scene=args.frames_per_scene,
                    point_spacing=args.point_spacing, pretrain_iterations=args.pretrain_iterations,
                    finetune_iterations=args.iterations, probe_iterations=0, max_voxels=args.max_voxels, jobs=args.jobs,
                    threads=args.threads, finetune_overrides=RECIPE, channels=tuple(args.channels),
                    max_seeds=args.max_seeds, target_halfwidth=args.target_halfwidth, budget_minutes=args.budget_minutes)
        results = run(plan)
    else:
        if not (out / "results.json").is_file():
            raise SystemExit(f"{out / 'results.json'}: not found; run the benchmark first (benchmarks/detection.py run)")
        results = Results(out / "results.json")
    if not results.select(stage=STAGE):
        raise SystemExit(f"{out / 'results.json'}: no detection runs ({SCORE}) yet")
    print(write_detection_report(results, Path(args.page)))


if __name__ == "__main__":
    main()
