"""`ppkt figures tsne | pca | curves`: the analysis figures (`ppkt.figures`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ppkt.commands import add_command, add_subcommands
from ppkt.commands.options import count, input_dir, output_dir, output_file
from ppkt.errors import UserError


def _tsne(args: argparse.Namespace) -> int:
    from ppkt.data.frames import open_frame_folder
    from ppkt.data.labels2d import read_classes, read_label, read_split
    from ppkt.figures import teacher_points, tsne_figure
    from ppkt.models.teacher import build_teacher

    data = Path(args.data)
    names, ignore = read_classes(data)
    frames = []
    for scene in read_split(data, args.split)[: args.scenes]:
        folder = open_frame_folder(data / "frames" / scene)
        for i, name in enumerate(folder.names):
            frames.append((folder[i].color, read_label(folder.root / "label" / f"{name}.png")))
    teacher = build_teacher(args.teacher_arch, args.teacher_weights, args.teacher_stage)
    done = tsne_figure(teacher_points(teacher, frames, args.pixels, ignore, args.seed), names, Path(args.out), args.seed)
    print(f"t-SNE of {done['global']} global and {done['pixel']} pixel features of {len(frames)} frames: "
          f"{done['png']} (points: {done['npz']})")
    return 0


def _pca(args: argparse.Namespace) -> int:
    import torch

    from ppkt.checkpoint import BACKBONE_FORMAT, load_checkpoint, load_state_strict
    from ppkt.config import load_config
    from ppkt.data.pairs import PixelPointFrames
    from ppkt.figures import pca_figure
    from ppkt.models.sparse_unet import build_sparse_unet

    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    cfg.augment.enabled = False  # the frame as it is
    sample = PixelPointFrames(cfg.data, cfg.augment)[(args.frame, 0)]
    export = load_checkpoint(run / "backbone.pth", BACKBONE_FORMAT)
    torch.manual_seed(0)
    before = build_sparse_unet(export["arch"], export["in_channels"], export["channels"])
    after = build_sparse_unet(export["arch"], export["in_channels"], export["channels"])
    if (export.get("pretrain") or {}).get("part") == "encoder":  # the decoder was not pretrained: keep its random init
        after.load_state_dict(export["state_dict"], strict=False)
    else:
        load_state_strict(after, export["state_dict"], run / "backbone.pth", "backbone")
    done = pca_figure(sample, {"before": before, "after": after}, Path(args.out))
    print(f"PCA colours of {done['points']} voxels of {sample.source}: {', '.join(map(str, done['ply']))}, {done['png']}")
    return 0


def _curves(args: argparse.Namespace) -> int:
    from ppkt.figures import curves_figure

    if args.labels and len(args.labels) != len(args.runs):
        raise UserError(f"--labels: {len(args.labels)} labels for {len(args.runs)} runs")
    done = curves_figure([Path(r) for r in args.runs], Path(args.out), args.labels, args.key)
    print(f"{args.key} of {len(args.runs)} runs ({', '.join(map(str, done['points']))} points): {done['png']}")
    return 0


def add_commands(subparsers) -> None:
    figures = add_command(subparsers, "figures", "the analysis figures: t-SNE of teacher features (paper Figure 3), "
                                                 "PCA colours of student features, loss curves")
    sub = add_subcommands(figures, "figures_command")
    p = add_command(sub, "tsne", "t-SNE of the teacher's global image features beside its pixel features, coloured "
                                 "by class, on the labelled frames of a synthetic world (paper Figure 3)")
    p.add_argument("--data", type=input_dir, required=True, metavar="DIR",
                   help="a dataset with 2D labels (`ppkt synth --out DIR`)")
    p.add_argument("--out", type=output_file, required=True, metavar="FILE",
                   help="the PNG to write (the points go beside it, .npz)")
    p.add_argument("--split", default="val", help="split file under DIR/splits")
    p.add_argument("--scenes", type=count(1), default=3, help="the first N scenes of the split")
    p.add_argument("--pixels", type=count(1), default=100, help="labelled pixels sampled per frame")
    p.add_argument("--teacher-arch", default="efficientnet_lite0", help="the 2D network whose features are shown")
    p.add_argument("--teacher-weights", default="imagenet", help="imagenet | none | a checkpoint path")
    p.add_argument("--teacher-stage", default=None, help="default: the deepest stage")
    p.add_argument("--seed", type=count(0), default=0, help="seed of the pixel sampling and of t-SNE")
    p.set_defaults(func=_tsne)
    p = add_command(sub, "pca", "a frame's voxels coloured by a 3-component PCA of the student's point features, from "
                                "random weights (before) and from a pretraining run's export (after): PLY + PNG")
    p.add_argument("--run", type=input_dir, required=True, metavar="DIR",
                   help="a pretraining run folder (config.yaml, backbone.pth)")
    p.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                   help="folder for before.ply, after.ply and pca.png")
    p.add_argument("--frame", type=count(0), default=0, help="index of the frame among the run's frames")
    p.set_defaults(func=_pca)
    p = add_command(sub, "curves", "the training loss of several runs in one plot")
    p.add_argument("runs", type=input_dir, nargs="+", metavar="RUN", help="run folders holding metrics.jsonl")
    p.add_argument("--out", type=output_file, required=True, metavar="FILE", help="the PNG to write")
    p.add_argument("--labels", nargs="*", default=None, help="one label per run (default: the folder names)")
    p.add_argument("--key", default="loss", help="the metric to plot")
    p.set_defaults(func=_curves)
