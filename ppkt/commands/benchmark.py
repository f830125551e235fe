"""`ppkt benchmark`: the project's benchmarks on the synthetic world, one front door (`make bench-*` call it).

    ppkt benchmark transfer run            # segmentation (configs/protocols/segmentation.yaml): worlds, pretraining
                                           # runs, learning curves on val; --until confirm: the test world too
    ppkt benchmark transfer report         # the pages again from <out>/results.json (and docs/results/<name>.json)
    ppkt benchmark transfer rerun ID       # one record from nothing, its score beside the recorded one
    ppkt benchmark detection run|report|rerun   # the same for detection (configs/protocols/detection.yaml)
    ppkt benchmark ablations run|report|rerun   # the paper's ablations (ppkt.benchmark.ablations)
    ppkt benchmark pilot --data WORLD --out DIR   # the paper's pilot study (ppkt.benchmark.pilot)

Every stage resumes: a finished run is a record of <out>/results.json, reused while its settings are unchanged.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ppkt.commands import add_command, add_subcommands
from ppkt.commands.options import count, input_dir, input_file, number, output_dir, output_file
from ppkt.errors import UserError

PROTOCOLS = Path(__file__).resolve().parents[1] / "configs" / "protocols"
PAGES = {"segmentation": ("transfer_benchmark.md", "segmentation_tuning.md"),
         "detection": ("detection_benchmark.md", "detection_tuning.md")}


def _protocol(args: argparse.Namespace) -> int:
    from ppkt.benchmark.confirm import rerun, run, upgrade_digests
    from ppkt.benchmark.confirm_report import write_confirm_page, write_tuning_page
    from ppkt.benchmark.protocol import load_protocol
    from ppkt.benchmark.results import Results

    protocol_file = Path(args.protocol or PROTOCOLS / f"{args.benchmark_default}.yaml")
    protocol = load_protocol(protocol_file)
    out = Path(args.out or f"runs/{protocol.name}")
    if args.action == "run":
        if args.seed_results and not (out / "results.json").exists():
            from ppkt.benchmark.confirm import seed_results

            print(f"{out / 'results.json'}: {seed_results(Path(args.seed_results), out)} records of "
                  f"{args.seed_results}, their paths moved under {out}")
        results = run(protocol, protocol_file, out, args.until)
    else:
        path = Path(args.results) if args.results else out / "results.json"
        if not path.is_file():
            raise UserError(f"{path}: not found; run the benchmark first (ppkt benchmark "
                             f"{args.benchmark} run)")
        results = Results(path)
        if not args.results:
            upgrade_digests(results)
    if args.action == "rerun":
        if not args.id:
            raise UserError("rerun needs the id of a record, e.g. confirm/full/ppkt_s1000")
        with tempfile.TemporaryDirectory() as tmp:
            r = rerun(results, args.id, Path(args.rerun_out or tmp), protocol)
        print(f"{args.id}: recorded {r['score']} {r['recorded']:.2f}, rerun {r['rerun']:.2f}")
        return 0
    docs = Path(args.docs)
    page, tuning_page = (docs / name for name in PAGES[protocol.task])
    write_tuning_page(results, protocol, tuning_page)
    written = [tuning_page]
    if results.select(stage="confirm"):
        write_confirm_page(results, protocol, page)
        written.append(page)
    copy = docs / "results" / f"{protocol.name}.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    if results.path.resolve() != copy.resolve():
        shutil.copyfile(results.path, copy)
    print("written: " + ", ".join(str(w) for w in [*written, copy]))
    return 0


def _ablations(args: argparse.Namespace) -> int:
    from ppkt.benchmark.ablations import VARIANTS, AblationPlan, run, tables_for
    from ppkt.benchmark.report import write_ablation_report
    from ppkt.benchmark.results import Results
    from ppkt.benchmark.transfer import HALF_WIDTHS, PROBE, scene_fraction

    if args.action == "rerun":
        from ppkt.benchmark.transfer import rerun_finetune

        if not args.id:
            raise UserError("rerun needs the id of a record, e.g. f0.15/ppkt_s0")
        if not (Path(args.out) / "results.json").is_file():
            raise UserError(f"{Path(args.out) / 'results.json'}: not found; run the ablations first")
        with tempfile.TemporaryDirectory() as tmp:
            r = rerun_finetune(Results(Path(args.out) / "results.json"), args.id, Path(args.rerun_out or tmp))
        print(f"{args.id}: recorded {r['score']} {r['recorded']:.2f}, rerun {r['rerun']:.2f}")
        return 0
    unknown = sorted(set(args.variants or ()) - set(VARIANTS))
    if unknown:
        raise UserError(f"--variants: unknown {', '.join(unknown)}; choose among {', '.join(VARIANTS)}")
    out = Path(args.out)
    if args.action == "run":
        cells = [*([] if args.no_probe else [PROBE]), scene_fraction(args.fraction)]
        plan = AblationPlan(out=out, cells=cells, seeds=args.seeds, scenes=args.scenes, frames_per_scene=8,
                            point_spacing=0.025, pretrain_iterations=args.pretrain_iterations,
                            finetune_iterations=args.finetune_iterations, probe_iterations=args.probe_iterations,
                            max_voxels=8000, jobs=args.jobs, threads=args.threads, channels=HALF_WIDTHS,
                            variants=tuple(args.variants or VARIANTS), teacher2d_iterations=args.teacher2d_iterations)
        results = run(plan)
    else:
        if not (out / "results.json").is_file():
            raise UserError(f"{out / 'results.json'}: not found; run the ablations first "
                             "(ppkt benchmark ablations run)")
        results = Results(out / "results.json")
    variants = {r.get("method") for r in results.select(stage="pretrain")} | {r["init"] for r in results.select(stage="finetune")}
    print(write_ablation_report(results, Path(args.docs) / "ablations.md", tables_for(sorted(variants))))
    return 0


def _pilot(args: argparse.Namespace) -> int:
    from ppkt.atomic import atomic_path
    from ppkt.benchmark.pilot import pilot_page, pilot_summary, run_pilot

    world = Path(args.data)
    if args.rerun:
        from ppkt.benchmark.pilot import rerun_pilot
        from ppkt.benchmark.results import Results

        if not (Path(args.out) / "results.json").is_file():
            raise UserError(f"--out: {Path(args.out) / 'results.json'}: not found; run the pilot first")
        with tempfile.TemporaryDirectory() as tmp:
            r = rerun_pilot(Results(Path(args.out) / "results.json"), args.rerun, world, Path(tmp))
        print(f"{args.rerun}: recorded {r['score']} {r['recorded']:.2f}, rerun {r['rerun']:.2f}")
        return 0
    if not (world / "dataset.json").is_file() or not (world / "frames").is_dir():
        raise UserError(f"--data: {world} is not a synthetic world (no dataset.json / frames/); "
                         "write one with `ppkt synth --out DIR`")
    if args.seeds < 2:
        raise UserError(f"--seeds: must be >= 2 for an interval, got {args.seeds}")
    results = run_pilot(world, Path(args.out), args.seeds, args.iterations, args.batch_size, args.threads)
    text = "\n".join(pilot_page(pilot_summary(results, range(args.seeds)), args.iterations))
    page = Path(args.page) if args.page else Path(args.out) / "pilot.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(page) as tmp:
        Path(tmp).write_text(text)
    print(text)
    return 0


def add_commands(subparsers) -> None:
    bench = add_command(subparsers, "benchmark", "the benchmarks on the synthetic world: transfer (segmentation), "
                                                 "detection, ablations, pilot (docs/benchmarks.md)")
    sub = add_subcommands(bench, "benchmark")
    for name, default, what in (("transfer", "segmentation", "PPKT vs scratch, 3D semantic segmentation"),
                                ("detection", "detection", "PPKT vs scratch, 3D detection (VoteNet)")):
        p = add_command(sub, name, f"{what}: the confirmatory protocol (tuned on val, reported on a test world)")
        p.add_argument("action", choices=("run", "report", "rerun"))
        p.add_argument("id", nargs="?", help="rerun: the record's name, e.g. confirm/full/ppkt_s1000")
        p.add_argument("--protocol", type=input_file, metavar="FILE",
                       help=f"the protocol (without it: ppkt/configs/protocols/{default}.yaml)")
        p.add_argument("--out", type=output_dir, metavar="DIR",
                       help="folder of the runs and results.json (without it: runs/<protocol name>)")
        p.add_argument("--results", type=input_file, metavar="FILE",
                       help="report / rerun: a results file (without it: <out>/results.json)")
        p.add_argument("--seed-results", type=input_file, metavar="FILE",
                       help="run: start <out>/results.json from this file (e.g. docs/results/<name>.json) when it "
                            "does not exist; the worlds and pretraining are made again, matching runs are reused")
        p.add_argument("--until", choices=("curves", "confirm"), default="curves",
                       help="run: curves = tuning on val only; confirm = then the test world (a fixed, committed "
                            "protocol)")
        p.add_argument("--rerun-out", type=output_dir, metavar="DIR",
                       help="rerun: the folder to rerun in (without it: a temporary one)")
        p.add_argument("--docs", type=output_dir, metavar="DIR", default="docs",
                       help="where the pages and results/<name>.json go")
        p.set_defaults(func=_protocol, benchmark_default=default)

    p = add_command(sub, "ablations", "the paper's ablations (frame-level baselines, PointContrast, PPKD, UPL vs PL, "
                                      "student width) against scratch, paired")
    p.add_argument("action", choices=("run", "report", "rerun"))
    p.add_argument("id", nargs="?", help="rerun: the record's name, e.g. f0.15/ppkt_s0 (its fine-tuning, from the "
                                         "world and backbone in --out)")
    p.add_argument("--out", type=output_dir, metavar="DIR", default="runs/ablations",
                   help="folder of the runs and results.json")
    p.add_argument("--rerun-out", type=output_dir, metavar="DIR",
                   help="rerun: the folder to rerun in (without it: a temporary one)")
    p.add_argument("--docs", type=output_dir, metavar="DIR", default="docs", help="where ablations.md goes")
    p.add_argument("--variants", nargs="*", metavar="NAME", help="pretraining variants (without it: all)")
    p.add_argument("--fraction", type=number(above=0, maximum=1), default=0.15,
                   help="the few-label regime: this share of the scenes")
    p.add_argument("--no-probe", action="store_true", help="leave out the linear probe")
    p.add_argument("--seeds", type=count(2), default=6, help="paired seeds per regime")
    p.add_argument("--scenes", type=count(2), default=120, help="scenes of the world")
    p.add_argument("--pretrain-iterations", type=count(1), default=600, help="per pretraining run")
    p.add_argument("--finetune-iterations", type=count(1), default=240, help="per fine-tuning run")
    p.add_argument("--probe-iterations", type=count(1), default=100, help="per linear probe")
    p.add_argument("--teacher2d-iterations", type=count(1), default=300, help="the 2D segmentation teacher's training")
    p.add_argument("--jobs", type=count(1), default=2, help="fine-tuning runs at once")
    p.add_argument("--threads", type=count(1), default=2, help="CPU threads in all (split over --jobs)")
    p.set_defaults(func=_ablations)

    p = add_command(sub, "pilot", "the paper's pilot study: a 2D segmentation network (EfficientNet-Lite0-FCN) "
                                  "from ImageNet weights vs from scratch, its predictions carried onto the 3D points "
                                  "of the validation scenes and scored as 3D segmentation")
    p.add_argument("--data", type=input_dir, required=True, metavar="DIR",
                   help="a synthetic world (`ppkt synth --out DIR`)")
    p.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                   help="folder of the trained networks and results.json "
                                                                "(finished runs are reused)")
    p.add_argument("--seeds", type=count(2), default=3, help="paired seeds (each: one ImageNet and one scratch run)")
    p.add_argument("--iterations", type=count(1), default=300, help="2D training iterations per run")
    p.add_argument("--batch-size", type=count(1), default=8, help="crops per iteration")
    p.add_argument("--threads", type=count(1), default=2, help="torch CPU threads")
    p.add_argument("--page", type=output_file, default=None, metavar="FILE",
                   help="the markdown report (default: OUT/pilot.md)")
    p.add_argument("--rerun", metavar="ID", help="train and score record ID of OUT/results.json again (e.g. "
                                                 "imagenet_s0) and print both 3D scores")
    p.set_defaults(func=_pilot)
