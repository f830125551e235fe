"""The ablation runner (`make bench-ablations`): the paper's comparisons as paired differences with intervals.

    python benchmarks/ablations.py run --out runs/ablations       # every stage; resumes; then writes the page
    python benchmarks/ablations.py report --out runs/ablations    # docs/ablations.md again, from results.json

Variants (ppkt/benchmark/ablations.py): scratch, global_kd, gupta, crd, pointcontrast, ppkd, ppnce (PPKT), pl (PPKT
with the plain projection), ppnce_seg (PPKT with the 2D segmentation teacher PPKD uses), ppnce_wide / scratch_wide
(the student at twice the widths). Each is fine-tuned in every regime with the same seeds; the page has one table per
paper comparison (methods, UPL vs PL, PPNCE vs PPKD, student size) with what agrees with the paper and what does not.
"""
from __future__ import annotations

import ppkt  # noqa: F401  (first: the OpenMP wait policy before torch loads)

import argparse
from pathlib import Path

from ppkt.benchmark.ablations import VARIANTS, AblationPlan, run, tables_for
from ppkt.benchmark.report import write_ablation_report
from ppkt.benchmark.results import Results
from ppkt.benchmark.transfer import HALF_WIDTHS, PROBE, scene_fraction

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", choices=("run", "report"), default="run")
    p.add_argument("--out", default="runs/ablations", help="folder of the runs and results.json")
    p.add_argument("--page", default=str(ROOT / "docs" / "ablations.md"), help="the markdown page to write")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--fraction", type=float, default=0.15, help="the few-label regime: this share of the scenes")
    p.add_argument("--no-probe", action="store_true", help="leave out the linear probe")
    p.add_argument("--seeds", type=int, default=6, help="paired seeds per regime")
    p.add_argument("--scenes", type=int, default=120)
    p.add_argument("--pretrain-iterations", type=int, default=600)
    p.add_argument("--finetune-iterations", type=int, default=240)
    p.add_argument("--probe-iterations", type=int, default=100)
    p.add_argument("--teacher2d-iterations", type=int, default=300, help="the 2D segmentation teacher's training")
    p.add_argument("--jobs", type=int, default=2, help="fine-tuning runs at once")
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all (split over --jobs)")
    args = p.parse_args()
    out = Path(args.out)
    if args.command == "run":
        cells = [*([] if args.no_probe else [PROBE]), scene_fraction(args.fraction)]
        plan = AblationPlan(out=out, cells=cells, seeds=args.seeds, scenes=args.scenes, frames_per_scene=8,
                            point_spacing=0.025, pretrain_iterations=args.pretrain_iterations,
                            finetune_iterations=args.finetune_iterations, probe_iterations=args.probe_iterations,
                            max_voxels=8000, jobs=args.jobs, threads=args.threads, channels=HALF_WIDTHS,
                            variants=tuple(args.variants), teacher2d_iterations=args.teacher2d_iterations)
        results = run(plan)
    else:
        if not (out / "results.json").is_file():
            raise SystemExit(f"{out / 'results.json'}: not found; run the ablations first (benchmarks/ablations.py run)")
        results = Results(out / "results.json")
    variants = {r.get("method") for r in results.select(stage="pretrain")} | {r["init"] for r in results.select(stage="finetune")}
    print(write_ablation_report(results, Path(args.page), tables_for(sorted(variants))))


if __name__ == "__main__":
    main()
