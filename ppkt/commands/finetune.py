"""`ppkt finetune` and `ppkt evaluate`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ppkt.commands import add_command, add_overrides
from ppkt.commands.pretrain import add_run_options


def _finetune(args: argparse.Namespace) -> int:
    from ppkt.config import load_config
    from ppkt.train.finetune import finetune
    from ppkt.train.finetune_config import FinetuneConfig

    overrides = list(args.overrides) + ([f"model.pretrained={args.pretrained}"] if args.pretrained else [])
    cfg = load_config(args.config, overrides, FinetuneConfig)
    finetune(cfg, resume=args.resume, overwrite=args.overwrite)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ppkt.train.evaluate import evaluate_checkpoint
    from ppkt.train.metrics import format_iou_table

    s = evaluate_checkpoint(args.checkpoint, args.data, args.split, args.out, args.device, args.workers, not args.no_ply)
    print(format_iou_table(s))
    print(f"wrote {Path(s['out_dir'])}: metrics.json, confusion.png" + ("" if args.no_ply else ", ply/"))
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "finetune",
                    "fine-tune 3D semantic segmentation, from scratch or a pretrained backbone",
                    epilog="few-label protocols: data.label_fraction=F (a seeded share of the training scenes; with "
                           "data.stratified=true every class present stays in), data.limited_points=K (K labelled "
                           "points per scene), model.freeze_backbone=true (linear probe: only the classifier trains)")
    p.add_argument("--config", required=True, metavar="FILE", help="YAML config, e.g. configs/finetune_synthetic.yaml")
    p.add_argument("--pretrained", default=None, metavar="CKPT",
                   help="backbone export of `ppkt pretrain` (backbone.pth); same as model.pretrained=CKPT "
                        "(default: the config's model.pretrained)")
    add_run_options(p)
    add_overrides(p, "data.label_fraction=0.2")
    p.set_defaults(func=_finetune)

    p = add_command(subparsers, "evaluate", "score a fine-tuned checkpoint on the original points of a split")
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="a `ppkt finetune` checkpoint, e.g. runs/x/checkpoints/last.pt")
    p.add_argument("--data", default=None, metavar="ROOT", help="dataset folder (default: the one it was trained on)")
    p.add_argument("--split", default="val", help="split file under ROOT/splits")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <run>/eval_<split>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, metavar="N", default=0, help="scene-loading processes")
    p.add_argument("--no-ply", action="store_true", help="skip the per-scene PLY files")
    p.set_defaults(func=_evaluate)
