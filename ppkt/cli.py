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


def _synth(args: argparse.Namespace) -> int:
    from ppkt.synthetic.dataset import write_dataset

    out = write_dataset(args.out, scenes=args.scenes, frames_per_scene=args.frames_per_scene, seed=args.seed,
                        image_size=tuple(args.image_size), workers=args.workers, point_spacing=args.point_spacing,
                        depth_noise=not args.no_depth_noise)
    print(f"wrote {out}: frames in {out / 'frames'}, labelled scenes in {out / 'scenes'}")
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

    p = sub.add_parser("synth", help="render a synthetic labelled RGB-D dataset (frames + 3D scenes)")
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--frames-per-scene", type=int, default=25)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    p.add_argument("--workers", type=int, default=2, help="processes rendering scenes in parallel")
    p.add_argument("--point-spacing", type=float, default=0.02, help="metres between sampled scene points")
    p.add_argument("--no-depth-noise", action="store_true", help="exact depth, no sensor noise or holes")
    p.set_defaults(func=_synth)

    from ppkt.train.teacher2d import add_teacher_commands

    add_teacher_commands(sub)

    from ppkt.train.finetune import add_finetune_commands

    add_finetune_commands(sub)

    from ppkt.models.pointcept import add_pointcept_commands

    add_pointcept_commands(sub)

    from ppkt.prepare.cli import add_prepare_commands

    add_prepare_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from ppkt.data.frames import FrameError
    from ppkt.data.scenes import SceneError
    from ppkt.models.teacher import TeacherWeightsError
    from ppkt.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (ConfigError, FrameError, SceneError, CheckpointError, TeacherWeightsError, argparse.ArgumentTypeError) as err:
        print(f"ppkt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppkt: interrupted; resume with --resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
