"""`ppkt overlaps`: the overlapping frame pairs of every scan below a root (`ppkt.data.overlap`), for PointContrast."""
from __future__ import annotations

import argparse
from pathlib import Path

from ppkt.commands import add_command
from ppkt.commands.options import count, fraction, input_dir, number, output_file
from ppkt.errors import UserError


def _overlaps(args: argparse.Namespace) -> int:
    import time

    from ppkt.data.frames import find_frame_folders, open_frame_folder
    from ppkt.data.overlap import mine_folder, write_overlaps
    from ppkt.progress import Progress

    root = Path(args.root)
    folders = [open_frame_folder(f, depth_scale=args.depth_scale, max_depth=args.max_depth, stride=args.stride)
               for f in find_frame_folders(root)]
    start, pairs, skipped = time.perf_counter(), [], 0
    with Progress(2 * sum(len(f) for f in folders), "overlaps", unit="frame") as progress:
        for folder in folders:
            name = folder.root.relative_to(root).as_posix() if folder.root != root else "."
            found, lost = mine_folder(folder, name, args.min_overlap, args.voxel, args.radius, progress.update,
                                      lambda text: progress.write(f"warning: {text}"))
            progress.update(lost)  # skipped frames have no overlap row either
            pairs += found
            skipped += lost
    frames = sum(len(f) for f in folders)
    if skipped == frames:
        raise UserError(f"{root}: none of its {frames} frames has a usable pose and depth (see the warnings above); "
                        "no overlaps file written")
    write_overlaps(args.out, pairs)
    print(f"{len(pairs)} pairs with overlap >= {args.min_overlap:g} among {frames} frames of {len(folders)} scan(s)"
          + (f" ({skipped} frames skipped: no usable pose or depth)" if skipped else "")
          + f" in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "overlaps", "find the pairs of frames of each scan that overlap (PointContrast's views): "
                                         "a tab-separated file folder, frame_a, frame_b, overlap")
    p.add_argument("root", type=input_dir,
                   help="a scan folder of RGB-D frames with poses (ScanNet export, 7-Scenes) or a folder "
                                "holding several")
    p.add_argument("--out", type=output_file, required=True, metavar="FILE",
                   help="the overlaps file to write (tab-separated)")
    p.add_argument("--min-overlap", type=fraction, default=0.3,
                   help="keep a pair when this fraction of frame_a's points has a frame_b point within --radius")
    p.add_argument("--voxel", type=number(above=0), default=0.05,
                   help="metres: one point per voxel of this size per frame")
    p.add_argument("--radius", type=number(above=0), default=0.075,
                   help="metres: how near a point of the other frame must be")
    p.add_argument("--stride", type=count(1), default=1, help="use every k-th frame of each scan")
    p.add_argument("--depth-scale", type=number(above=0), default=1000.0, help="depth PNG units per metre")
    p.add_argument("--max-depth", type=number(above=0), default=10.0, help="metres; farther depth counts as invalid")
    p.set_defaults(func=_overlaps)
