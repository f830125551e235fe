"""`ppkt teacher train` and `ppkt teacher evaluate`: the 2D segmentation teacher."""
from __future__ import annotations

import argparse

from ppkt.atomic import write_json
from ppkt.commands import add_command, add_subcommands
from ppkt.commands.options import count, input_dir, input_file, number, output_file
from ppkt.teacher2d_defaults import DEFAULT_BATCH_SIZE, DEFAULT_IMAGE_SIZE, DEFAULT_ITERATIONS, DEFAULT_LR, SEG_ARCHS


def _train(args: argparse.Namespace) -> int:
    from ppkt.train.metrics import format_iou_table
    from ppkt.train.teacher2d import train_teacher2d

    result = train_teacher2d(args.data, args.out, arch=args.arch, iterations=args.iterations, batch_size=args.batch_size,
                             lr=args.lr, image_size=tuple(args.image_size), seed=args.seed, workers=args.workers,
                             device=args.device, backbone_weights=args.backbone_weights,
                             eval_split=None if args.no_eval else "val", resume=args.resume, overwrite=args.overwrite)
    print(f"checkpoint: {result['checkpoint']}  ({result['seconds']:.0f} s, final loss {result['final_loss']:.4f})")
    print(f"metrics: {result['metrics_file']}  curve: {result['loss_curve']}")
    if result["val"] is not None:
        print(format_iou_table(result["val"]))
    print(f"use it as the PPKT teacher: teacher.arch={args.arch} teacher.weights={result['checkpoint']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ppkt.train.metrics import format_iou_table
    from ppkt.train.teacher2d import evaluate_teacher2d

    metrics = evaluate_teacher2d(args.checkpoint, args.data, split=args.split, device=args.device, progress=True)
    print(format_iou_table(metrics))
    if args.json:
        write_json(args.json, metrics)
    return 0


def add_commands(subparsers) -> None:
    teacher = add_command(subparsers, "teacher", "train / evaluate a 2D segmentation teacher on rendered 2D labels")
    sub = add_subcommands(teacher, "teacher_command")

    p = add_command(sub, "train", "train a ResNet-FCN on DATA's train split; its backbone is a PPKT teacher")
    p.add_argument("--data", type=input_dir, required=True, metavar="DIR",
                   help="dataset root (classes.json, splits/, frames/)")
    p.add_argument("--out", type=output_file, required=True, metavar="FILE",
                   help="checkpoint to write, e.g. runs/teacher2d.pt")
    p.add_argument("--arch", default="resnet18", choices=SEG_ARCHS, help="backbone")
    p.add_argument("--iterations", type=count(1), metavar="N", default=DEFAULT_ITERATIONS, help="training iterations")
    p.add_argument("--batch-size", type=count(1), metavar="N", default=DEFAULT_BATCH_SIZE, help="crops per iteration")
    p.add_argument("--lr", type=number(above=0), default=DEFAULT_LR, help="AdamW peak learning rate")
    p.add_argument("--image-size", type=count(16), nargs=2, default=list(DEFAULT_IMAGE_SIZE), metavar=("H", "W"),
                   help="training crop size; use the pretraining's data.image_size")
    p.add_argument("--seed", type=count(0), metavar="N", default=0, help="seed of every random choice")
    p.add_argument("--workers", type=count(0), metavar="N", default=0,
                   help="data loading processes (0: in the training process)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--backbone-weights", default="none", metavar="WEIGHTS",
                   help="backbone init: none | imagenet | checkpoint path")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation on the val split after training")
    p.add_argument("--resume", action="store_true", help="continue the run of --out from <stem>.last.pt (same options)")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier run of --out and start over")
    p.set_defaults(func=_train)

    p = add_command(sub, "evaluate", "pixel accuracy, mIoU and per-class IoU of a teacher checkpoint", aliases=["eval"])
    p.add_argument("--checkpoint", type=input_file, required=True, metavar="FILE",
                   help="a `ppkt teacher train` checkpoint")
    p.add_argument("--data", type=input_dir, required=True, metavar="DIR",
                   help="dataset root (classes.json, splits/, frames/)")
    p.add_argument("--split", default="val", help="split file under DIR/splits")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", type=output_file, default=None, metavar="FILE",
                   help="also write the metrics as JSON (default: no)")
    p.set_defaults(func=_evaluate)
