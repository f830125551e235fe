"""`ppkt finetune` and `ppkt evaluate`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ppkt.commands import add_command, add_overrides
from ppkt.commands.options import count, input_dir, input_file, output_dir
from ppkt.commands.pretrain import add_run_options
from ppkt.errors import UserError


def _finetune(args: argparse.Namespace) -> int:
    from ppkt.config import load_config

    overrides = list(args.overrides) + ([f"model.pretrained={args.pretrained}"] if args.pretrained else [])
    if args.task == "detection":
        from ppkt.train.detect import finetune_detection
        from ppkt.train.detect_config import DetectionConfig

        finetune_detection(load_config(args.config, overrides, DetectionConfig), resume=args.resume, overwrite=args.overwrite)
        return 0
    from ppkt.train.finetune import finetune
    from ppkt.train.finetune_config import FinetuneConfig

    finetune(load_config(args.config, overrides, FinetuneConfig), resume=args.resume, overwrite=args.overwrite)
    return 0


def _evaluate_detection(args: argparse.Namespace) -> int:
    from ppkt.detection.evaluate import format_ap_table, score_prediction_dir
    from ppkt.train.detect import evaluate_detection_checkpoint

    if (args.checkpoint is None) == (args.predictions is None):
        raise UserError("--checkpoint / --predictions: give one of them (a detector to run, or another system's boxes)")
    if args.checkpoint is not None:
        s = evaluate_detection_checkpoint(args.checkpoint, args.data, args.split, args.out, args.device, not args.no_ply)
    else:
        if args.data is None or args.out is None:
            raise UserError("--predictions: needs --data ROOT and --out DIR too")
        s = score_prediction_dir(args.predictions, args.data, args.split, args.out, args.classes, args.axis_aligned)
    print(format_ap_table(s))
    print(f"wrote {Path(s['out_dir']) / 'metrics.json'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.task == "detection":
        return _evaluate_detection(args)
    if args.checkpoint is None:
        raise UserError("--checkpoint: required (scoring --predictions is for --task detection)")
    from ppkt.train.evaluate import evaluate_checkpoint
    from ppkt.train.metrics import format_iou_table

    s = evaluate_checkpoint(args.checkpoint, args.data, args.split, args.out, args.device, args.workers, not args.no_ply)
    print(format_iou_table(s))
    print(f"wrote {Path(s['out_dir'])}: metrics.json, confusion.png" + ("" if args.no_ply else ", ply/"))
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "finetune",
                    "fine-tune 3D semantic segmentation or detection, from scratch or a pretrained backbone",
                    epilog="few-label protocols: data.label_fraction=F (a seeded share of the training scenes; with "
                           "data.stratified=true every class present stays in), data.limited_points=K (K labelled "
                           "points per scene), model.freeze_backbone=true (linear probe: only the classifier trains)")
    p.add_argument("--config", type=input_file, required=True, metavar="FILE",
                   help="YAML config, e.g. configs/finetune_synthetic.yaml "
                                                                  "(detection: configs/detection_synthetic.yaml)")
    add_task(p)
    p.add_argument("--pretrained", type=input_file, default=None, metavar="CKPT",
                   help="backbone export of `ppkt pretrain` (backbone.pth); same as model.pretrained=CKPT "
                        "(default: the config's model.pretrained)")
    add_run_options(p)
    add_overrides(p, "data.label_fraction=0.2")
    p.set_defaults(func=_finetune)

    p = add_command(subparsers, "evaluate", "score a fine-tuned checkpoint (or, for detection, any system's boxes) on a split",
                    epilog="detection boxes of another system: --task detection --predictions DIR --data ROOT --out OUT, "
                           "DIR/<scene>.npy a (K, 9) array [cx, cy, cz, dx, dy, dz, heading, class, score]")
    add_task(p)
    p.add_argument("--checkpoint", type=input_file, default=None, metavar="FILE",
                   help="a `ppkt finetune` checkpoint, e.g. runs/x/checkpoints/last.pt")
    p.add_argument("--predictions", type=input_dir, default=None, metavar="DIR",
                   help="detection only: score DIR/<scene>.npy files instead of a checkpoint (no file: no detections)")
    p.add_argument("--classes", default=None, metavar="NAME",
                   help="detection classes of --predictions: scannet18 | sunrgbd10 | synthetic | a detection_classes.json "
                        "(default: ROOT/detection_classes.json)")
    p.add_argument("--axis-aligned", action="store_true",
                   help="detection --predictions: IoU ignores headings (ScanNet)")
    p.add_argument("--data", type=input_dir, default=None, metavar="ROOT",
                   help="dataset folder (default: the one it was trained on)")
    p.add_argument("--split", default="val", help="split file under ROOT/splits")
    p.add_argument("--out", type=output_dir, default=None, metavar="DIR",
                   help="output folder (default: <run>/eval_<split>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=count(0), metavar="N", default=0, help="scene-loading processes")
    p.add_argument("--no-ply", action="store_true", help="skip the per-scene PLY files")
    p.set_defaults(func=_evaluate)


def add_task(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=("segmentation", "detection"), default="segmentation",
                   help="semantic segmentation (ppkt.train.finetune) or 3D detection (VoteNet, ppkt.train.detect)")
