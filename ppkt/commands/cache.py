"""`ppkt cache-teacher`: the frozen teacher's features of every pretraining frame, computed once and stored
memory-mappable (`ppkt.data.teacher_cache`), for `ppkt pretrain ... teacher.cache=DIR`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ppkt.commands import add_command, add_overrides
from ppkt.commands.options import count, input_file, output_dir


def _cache_teacher(args: argparse.Namespace) -> int:
    import torch

    from ppkt.config import ConfigError, PretrainConfig, load_config, validate_pretrain
    from ppkt.data.pairs import PixelPointFrames
    from ppkt.data.teacher_cache import needs_flips, write_teacher_cache
    from ppkt.models.teacher import build_teacher
    from ppkt.progress import Progress
    from ppkt.device import pick_device

    cfg = load_config(args.config, args.overrides, PretrainConfig)
    out = args.out or cfg.teacher.cache
    if not out:
        raise ConfigError("cache-teacher: give the cache folder, --out DIR (or teacher.cache=DIR)")
    cfg.teacher.cache = str(out)
    validate_pretrain(cfg)  # the same checks as `ppkt pretrain`, augment.resize=[1, 1] included
    device = pick_device(args.device or cfg.train.device, what="--device" if args.device else "train.device")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    folders = PixelPointFrames(cfg.data, cfg.augment).folders
    torch.manual_seed(cfg.train.seed)  # teacher.weights=none: the random teacher `ppkt pretrain` builds
    teacher = build_teacher(cfg.teacher.arch, cfg.teacher.weights, cfg.teacher.stage).to(device)
    frames = sum(len(f) for f in folders)
    with Progress(frames, "cache-teacher", unit="frame") as progress:
        manifest = write_teacher_cache(out, folders, teacher, cfg.data.image_size, needs_flips(cfg.augment),
                                       batch_size=args.batch_size, progress=progress)
    size = sum((Path(out) / e["file"]).stat().st_size for e in manifest["folders"])
    unusable = sum(len(e["unusable"]) for e in manifest["folders"])
    print(f"{frames} frames in {len(folders)} folder(s), variants {manifest['variants']}, features "
          f"{manifest['feature_shape']} float16, {size / 2**20:.1f} MiB in {out}"
          + (f"; {unusable} unusable frame(s) listed in the manifest" if unusable else ""))
    print(f"pretrain with it: ppkt pretrain --config {args.config} ... teacher.cache={out} augment.resize=[1,1]")
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "cache-teacher", "compute the frozen teacher's features of every pretraining frame "
                                                 "once (resumable), for `ppkt pretrain ... teacher.cache=DIR`")
    p.add_argument("--config", type=input_file, required=True, metavar="FILE",
                   help="the pretraining config, e.g. configs/pretrain_demo.yaml")
    p.add_argument("--out", type=output_dir, default=None, metavar="DIR",
                   help="cache folder (default: the config's teacher.cache)")
    p.add_argument("--batch-size", type=count(1), metavar="N", default=8, help="frames per teacher forward")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the config's train.device)")
    add_overrides(p, "augment.resize=[1,1]")
    p.set_defaults(func=_cache_teacher)
