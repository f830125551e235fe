"""`ppkt pilot`: the paper's pilot study on the synthetic world (`ppkt.benchmark.pilot`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ppkt.commands import add_command


def _pilot(args: argparse.Namespace) -> int:
    from ppkt.atomic import atomic_path
    from ppkt.benchmark.pilot import pilot_page, pilot_summary, run_pilot

    world = Path(args.data)
    if not (world / "dataset.json").is_file() or not (world / "frames").is_dir():
        raise SystemExit(f"ppkt pilot: {world} is not a synthetic world (no dataset.json / frames/); "
                         "write one with `ppkt synth --out DIR`")
    if args.seeds < 2:
        raise SystemExit(f"ppkt pilot: --seeds must be >= 2 for an interval, got {args.seeds}")
    results = run_pilot(world, Path(args.out), args.seeds, args.iterations, args.batch_size, args.threads)
    text = "\n".join(pilot_page(pilot_summary(results, range(args.seeds)), args.iterations))
    page = Path(args.page) if args.page else Path(args.out) / "pilot.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(page) as tmp:
        Path(tmp).write_text(text)
    print(text)
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "pilot", "the paper's pilot study: a 2D segmentation network (EfficientNet-Lite0-FCN) "
                                         "from ImageNet weights vs from scratch, its predictions carried onto the 3D "
                                         "points of the validation scenes and scored as 3D segmentation")
    p.add_argument("--data", required=True, metavar="DIR", help="a synthetic world (`ppkt synth --out DIR`)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the trained networks and results.json "
                                                                "(finished runs are reused)")
    p.add_argument("--seeds", type=int, default=3, help="paired seeds (each: one ImageNet and one scratch run)")
    p.add_argument("--iterations", type=int, default=300, help="2D training iterations per run")
    p.add_argument("--batch-size", type=int, default=8, help="crops per iteration")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--page", default=None, metavar="FILE", help="the markdown report (default: OUT/pilot.md)")
    p.set_defaults(func=_pilot)
