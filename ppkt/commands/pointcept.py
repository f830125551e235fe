"""`ppkt pointcept export` and `ppkt pointcept import`: backbones to and from Pointcept's SpUNet-v1m1."""
from __future__ import annotations

import argparse

from ppkt.commands import add_command, add_subcommands
from ppkt.commands.options import input_file, output_file


def _export(args: argparse.Namespace) -> int:
    from ppkt.checkpoint import BACKBONE_FORMAT, load_checkpoint, save_atomic
    from ppkt.models.pointcept import to_pointcept

    out = save_atomic(to_pointcept(load_checkpoint(args.backbone, BACKBONE_FORMAT)), args.out)
    print(f"wrote {out}: load it in Pointcept with weight='{out}' (SpUNet-v1m1, see docs/pointcept.md)")
    return 0


def _import(args: argparse.Namespace) -> int:
    from ppkt.checkpoint import save_atomic
    from ppkt.models.pointcept import read_pointcept

    export = read_pointcept(args.checkpoint)
    out = save_atomic(export, args.out)
    print(f"wrote {out}: {export['arch']} {export['channels']}, fine-tune with --pretrained {out}")
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "pointcept", "convert backbones to / from Pointcept's SpUNet-v1m1")
    sub = add_subcommands(p, "pointcept_command")
    e = add_command(sub, "export", "ppkt backbone.pth -> a Pointcept weight file")
    e.add_argument("--backbone", type=input_file, required=True, metavar="FILE",
                   help="backbone.pth written by `ppkt pretrain`")
    e.add_argument("--out", type=output_file, required=True, metavar="FILE", help="Pointcept weight file to write")
    e.set_defaults(func=_export)
    i = add_command(sub, "import", "a Pointcept SpUNet-v1m1 checkpoint -> a ppkt backbone export")
    i.add_argument("--checkpoint", type=input_file, required=True, metavar="FILE",
                   help="Pointcept checkpoint (model_best.pth, ...)")
    i.add_argument("--out", type=output_file, required=True, metavar="FILE",
                   help="backbone export to write, for `ppkt finetune --pretrained`")
    i.set_defaults(func=_import)
