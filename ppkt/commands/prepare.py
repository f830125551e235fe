"""`ppkt prepare scannet | scannet-scenes | s3dis | sunrgbd`: raw datasets -> what `ppkt pretrain` and `ppkt finetune` read."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

from ppkt.commands import add_command, add_subcommands
from ppkt.commands.options import count, input_dir, output_dir


def _convert_all(fn: Callable[..., dict], items: Sequence[Path], out: Path, workers: int, what: str,
                 notes: Callable[[dict], List[str]] = lambda info: []) -> Tuple[List[str], List[str]]:
    """Convert every item with fn(item, out) and print a summary; returns (names done, failures).

    While it runs: a progress bar or line per item, errors and notes on their own lines (all on stderr).
    """
    from ppkt.prepare.parallel import run_jobs

    t0, done, new, failed = time.perf_counter(), [], 0, []
    for item, result, progress in run_jobs(fn, items, out, workers=workers, desc=f"prepare {what}"):
        if isinstance(result, Exception):
            failed.append(f"{item}: {result}")
            progress.write(f"error: {result}")
        else:
            done.append(item.name)
            if not result["skipped"]:
                new += 1
                for line in notes(result):
                    progress.write(line)
        progress.report(failed=len(failed))
    print(f"{len(items)} {what}: {new} converted, {len(done) - new} already done, {len(failed)} failed; "
          f"{time.perf_counter() - t0:.1f} s; output in {out}")
    for f in failed:
        print(f"  failed: {f}")
    return done, failed


def _s3dis_notes(info: dict) -> List[str]:
    lines = [f"{info['room']}: skipped {info['corrupt_lines_skipped']} corrupt line(s)"] if info["corrupt_lines_skipped"] else []
    if info["mapped_to_clutter"]:
        lines.append(f"{info['room']}: {', '.join(info['mapped_to_clutter'])} counted as clutter")
    return lines


def _scannet(args: argparse.Namespace) -> int:
    from ppkt.prepare.scannet_frames import export_scans

    summary = export_scans(args.scans, args.out, every=args.every, workers=args.workers)
    print(summary.text())
    print(f"frames in {args.out}: `ppkt pretrain ... data.roots=[{args.out}] data.layout=scannet`")
    return 1 if summary.failed else 0


def _parse_splits(items: Sequence[str]) -> dict:
    splits = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"--split {item!r}: expected NAME=FILE, e.g. train=scannetv2_train.txt")
        splits[name] = Path(path)
    return splits


def _scannet_scenes(args: argparse.Namespace) -> int:
    from ppkt.prepare.scannet_scenes import convert_scan, find_scans, write_splits

    splits = _parse_splits(args.split)
    out = Path(args.out)
    scans = find_scans(args.scans)
    done, failed = _convert_all(convert_scan, scans, out, args.workers, "scans")
    if failed:
        return 1
    for name, count in write_splits(out, splits, done).items():
        print(f"split {name}: {count} scenes in {out / 'splits' / (name + '.txt')}")
    return 0


def _s3dis(args: argparse.Namespace) -> int:
    from ppkt.prepare.s3dis import convert_room, find_rooms

    rooms = find_rooms(args.root)
    _, failed = _convert_all(convert_room, rooms, Path(args.out), args.workers, "rooms", _s3dis_notes)
    return 1 if failed else 0


def _sunrgbd(args: argparse.Namespace) -> int:
    from ppkt.prepare.sunrgbd import convert_sample, find_samples, write_splits

    out = Path(args.out)
    samples, splits = find_samples(args.trainval, limit=args.limit)
    done, failed = _convert_all(convert_sample, samples, out, args.workers, "samples")
    for name, count in write_splits(out, splits, [Path(d).stem for d in done], args.keep_empty).items():
        print(f"split {name}: {count} scenes in {out / 'splits' / (name + '.txt')}")
    return 1 if failed else 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "prepare", "convert ScanNet / S3DIS / SUN RGB-D downloads (resumable, parallel)")
    sub = add_subcommands(p, "dataset")

    q = add_command(sub, "scannet", ".sens files -> exported RGB-D frames for `ppkt pretrain`")
    q.add_argument("--scans", type=input_dir, required=True, metavar="DIR",
                   help="ScanNet's scans/ folder (<scan>/<scan>.sens), or one .sens file")
    q.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                   help="output folder (one frame folder per scan)")
    q.add_argument("--every", type=count(1), metavar="K", default=25,
                   help="export every k-th frame (25: the paper's choice)")
    q.add_argument("--workers", type=count(1), metavar="N", default=1, help="scans exported in parallel")
    q.set_defaults(func=_scannet)

    q = add_command(sub, "scannet-scenes", "meshes + labels -> scene folders for `ppkt finetune` (and boxes)")
    q.add_argument("--scans", type=input_dir, required=True, metavar="DIR",
                   help="ScanNet's scans/ folder (<scan>/<scan>_vh_clean_2.ply, ...)")
    q.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                   help="output dataset folder (scenes/<scan>/, splits/)")
    q.add_argument("--split", action="append", default=[], metavar="NAME=FILE",
                   help="a split list, e.g. train=scannetv2_train.txt (repeatable)")
    q.add_argument("--workers", type=count(1), metavar="N", default=1, help="scans converted in parallel")
    q.set_defaults(func=_scannet_scenes)

    q = add_command(sub, "s3dis", "Area_N/<room>/Annotations -> scene folders for `ppkt finetune`")
    q.add_argument("--root", type=input_dir, required=True, metavar="DIR",
                   help="Stanford3dDataset_v1.2_Aligned_Version/")
    q.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                   help="output dataset folder (Area_N/<room>/)")
    q.add_argument("--workers", type=count(1), metavar="N", default=1, help="rooms converted in parallel")
    q.set_defaults(func=_s3dis)

    q = add_command(sub, "sunrgbd", "VoteNet's sunrgbd_trainval/ -> scene folders with oriented boxes (10 classes)")
    q.add_argument("trainval", metavar="SUNRGBD_TRAINVAL",
                   help="VoteNet's extracted folder (depth/, label/, calib/, train_data_idx.txt, val_data_idx.txt)")
    q.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                   help="output dataset folder (scenes/<id>/, splits/)")
    q.add_argument("--workers", type=count(1), metavar="N", default=1, help="samples converted in parallel")
    q.add_argument("--limit", type=count(1), metavar="N", default=None,
                   help="convert only the first N ids of each split")
    q.add_argument("--keep-empty", action="store_true",
                   help="list samples without any of the 10 classes in the splits too (VoteNet leaves them out)")
    q.set_defaults(func=_sunrgbd)
