"""`ppkt pretrain`, `ppkt config` and `ppkt frames`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ppkt.commands import add_command, add_overrides
from ppkt.commands.options import count, input_dir, input_file, number

CONFIG_KINDS = ("pretrain", "finetune", "detection")


def config_kind(path: Optional[str]) -> str:
    """"detection" for a config file with a top-level `eval` section, "finetune" for one with a `model` section,
    else "pretrain" (also for no file)."""
    if path is None or not Path(path).is_file():
        return "pretrain"  # load_config reports a missing file
    from omegaconf import OmegaConf

    try:
        top = OmegaConf.load(path)
    except Exception:  # not YAML: load_config reports it, naming the file
        return "pretrain"
    keys = set(top.keys()) if hasattr(top, "keys") else set()
    return "detection" if "eval" in keys else "finetune" if "model" in keys else "pretrain"


def _pretrain(args: argparse.Namespace) -> int:
    from ppkt.config import PretrainConfig, load_config
    from ppkt.train.pretrain import pretrain

    cfg = load_config(args.config, args.overrides, PretrainConfig)
    pretrain(cfg, resume=args.resume, overwrite=args.overwrite)
    return 0


def _config(args: argparse.Namespace) -> int:
    from ppkt.config import PretrainConfig, config_to_yaml, load_config
    from ppkt.train.detect_config import DetectionConfig
    from ppkt.train.finetune_config import FinetuneConfig

    schema = {"finetune": FinetuneConfig, "detection": DetectionConfig}.get(args.kind or config_kind(args.config),
                                                                           PretrainConfig)
    print(config_to_yaml(load_config(args.config, args.overrides, schema)), end="")
    return 0


def _frames(args: argparse.Namespace) -> int:
    from ppkt.data.frames import find_frame_folders, open_frame_folder

    total = 0
    for folder in find_frame_folders(args.root):
        frames = open_frame_folder(folder, layout=args.layout, depth_scale=args.depth_scale, stride=args.stride)
        first = frames[0]
        h, w = first.depth.shape
        print(f"{folder}: {len(frames)} frames, layout {frames.layout}, {w}x{h}, fx={first.intrinsics[0, 0]:.1f}, "
              f"pose {'yes' if first.pose is not None else 'no'}")
        total += len(frames)
    print(f"total: {total} frames")
    return 0


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--resume / --overwrite of the training commands (one or the other)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/checkpoints/last.pt")
    group.add_argument("--overwrite", action="store_true",
                       help="start over in a train.out_dir that already holds a run: deletes its checkpoints, "
                            "metrics and TensorBoard logs")


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "pretrain", "pretrain a 3D student on RGB-D frames with a frozen 2D teacher")
    p.add_argument("--config", type=input_file, required=True, metavar="FILE",
                   help="YAML config, e.g. configs/pretrain_demo.yaml")
    add_run_options(p)
    add_overrides(p, "train.iterations=100")
    p.set_defaults(func=_pretrain)

    p = add_command(subparsers, "config", "print the resolved config (defaults <- file <- overrides) of a "
                                          "pretraining, fine-tuning or detection run")
    p.add_argument("--config", type=input_file, default=None, metavar="FILE",
                   help="YAML config (default: none, the pretraining defaults)")
    p.add_argument("--kind", default=None, choices=CONFIG_KINDS,
                   help="the config's schema (default: detection for a file with a top-level `eval` section, "
                        "finetune for one with a `model` section, else pretrain)")
    add_overrides(p, "train.batch_size=8")
    p.set_defaults(func=_config)

    p = add_command(subparsers, "frames", "list the RGB-D frame folders found under a directory")
    p.add_argument("root", type=input_dir, help="a frame folder, or a folder holding many")
    p.add_argument("--layout", default="auto", choices=["auto", "scannet", "7scenes"], help="folder layout")
    p.add_argument("--depth-scale", type=number(above=0), metavar="S", default=1000.0, help="depth units per metre")
    p.add_argument("--stride", type=count(1), metavar="K", default=1, help="keep every k-th frame")
    p.set_defaults(func=_frames)
