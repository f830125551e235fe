"""The `ppkt` command."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ppkt.config import ConfigError, PretrainConfig, config_to_yaml, load_config


def _pretrain(args: argparse.Namespace) -> int:
    from ppkt.train.pretrain import pretrain

    cfg = load_config(args.config, args.overrides, PretrainConfig)
    pretrain(cfg, resume=args.resume)
    return 0


def _show_config(args: argparse.Namespace) -> int:
    print(config_to_yaml(load_config(args.config, args.overrides, PretrainConfig)), end="")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppkt", description="Contrastive pixel-to-point knowledge transfer: pretrain 3D networks from 2D ones.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain a 3D student on RGB-D frames with a frozen 2D teacher")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/pretrain_demo.yaml")
    p.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/checkpoints/last.pt")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.iterations=100")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("config", help="print the resolved config (file + overrides)")
    p.add_argument("--config", default=None)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_show_config)

    p = sub.add_parser("frames", help="list the RGB-D frame folders found under a directory")
    p.add_argument("root")
    p.add_argument("--layout", default="auto", choices=["auto", "scannet", "7scenes"])
    p.add_argument("--depth-scale", type=float, default=1000.0, help="depth units per metre")
    p.add_argument("--stride", type=int, default=1)
    p.set_defaults(func=_frames)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from ppkt.data.frames import FrameError
    from ppkt.models.teacher import TeacherWeightsError
    from ppkt.train.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (ConfigError, FrameError, CheckpointError, TeacherWeightsError) as err:
        print(f"ppkt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppkt: interrupted; resume with --resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
