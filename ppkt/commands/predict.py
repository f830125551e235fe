"""`ppkt predict`: a fine-tuned segmentation or detection model on a user's own scans (PLY clouds or meshes, scene folders, .npy /
.npz points, folders of RGB-D frames)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ppkt.commands import add_command
from ppkt.commands.options import count, fraction, input_file, input_path, number, output_dir
from ppkt.errors import UserError


def check_options(args: argparse.Namespace) -> None:
    """What the option types (`ppkt.commands.options`) cannot see: two inputs whose outputs would share a name."""
    names = [Path(i).stem if Path(i).is_file() else Path(i).name for i in args.inputs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"INPUT: several inputs are named {', '.join(twice)}; their outputs would overwrite each other")


def load_model(path: str):
    """(task, model, classes, cfg, state, colours (C, 3) uint8) of a segmentation or detection checkpoint."""
    import numpy as np
    import torch

    from ppkt.checkpoint import CheckpointError, load_problem
    from ppkt.colors import class_colors

    try:
        fmt = torch.load(path, map_location="cpu", weights_only=True).get("format")
    except Exception as err:  # noqa: BLE001 - any unreadable file is one clear error
        raise CheckpointError(f"--checkpoint: {path}: cannot read it ({load_problem(err)})") from None
    if fmt == "ppkt-detection":
        from ppkt.train.detect import load_detector

        model, classes, cfg, state = load_detector(path, "cpu")
        task = "detection"
    elif fmt == "ppkt-finetune":
        from ppkt.train.evaluate import load_finetuned

        model, classes, cfg, state = load_finetuned(path, "cpu")
        task = "segmentation"
    else:
        raise CheckpointError(f"--checkpoint: {path}: a {fmt!r} file; `ppkt predict` takes a `ppkt finetune` checkpoint "
                              "(segmentation or --task detection), e.g. runs/<run>/checkpoints/last.pt"
                              + ("; a backbone export is not a trained model: fine-tune it first" if fmt == "ppkt-backbone" else ""))
    colors = np.asarray(state.get("class_colors") or [], dtype=np.uint8)
    if colors.shape != (classes.num_classes, 3):
        colors = class_colors(classes.num_classes)
    return task, model.eval(), classes, cfg, state, colors


def _predict(args: argparse.Namespace) -> int:
    check_options(args)
    import numpy as np
    import torch

    from ppkt.atomic import write_json
    from ppkt.data.ply import write_ply
    from ppkt.predict.outputs import preview, preview_boxes, save_npy, write_scannet_labels
    from ppkt.predict.scan import read_scan, to_model_frame
    from ppkt.predict.segment import missing_color_note
    from ppkt.progress import Progress
    from ppkt.provenance import stamp
    from ppkt.device import flush_denormals

    if args.threads:
        torch.set_num_threads(args.threads)
    task, model, classes, cfg, state, colors = load_model(args.checkpoint)
    if task == "detection" and args.format == "scannet":
        raise UserError("--format scannet: the ScanNet benchmark's text files are per-point labels of a segmentation "
                        "model; this checkpoint is a detector")
    voxel = cfg.data.voxel_size
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out: cannot make the folder {out} ({err.strerror})") from None
    backbone = model.backbone
    summary = {"checkpoint": str(args.checkpoint), "task": task, "model": {
        "arch": cfg.model.arch, "channels": list(getattr(backbone, "channels", []) or cfg.model.channels or []),
        "classes": list(classes.names), "class_set": classes.name, "voxel_size": voxel,
        "input_features": getattr(cfg.data, "features", "color"),
        "iterations": int(state["iteration"]), "trained_on": cfg.data.root, "pretrained": cfg.model.pretrained,
        "written_by": state.get("ppkt")}, "predicted_by": stamp(), "scans": []}
    for item in args.inputs:
        t = time.perf_counter()
        scan = read_scan(item, voxel, progress=not args.quiet)
        print(scan.describe(), flush=True)
        frame = to_model_frame(scan, args.scale, args.up, not args.no_up_check)
        with Progress(1, f"predict {scan.name}", unit="tile", enabled=not args.quiet) as bar:
            def on_tile(done, total):
                bar.set_total(total)
                bar.report(done)
            with flush_denormals(torch.device("cpu")):
                if task == "segmentation":
                    from ppkt.predict.segment import segment_scan

                    result = segment_scan(model, frame, voxel, args.tile, args.margin, on_tile, cfg.data.features,
                                          cfg.data.color_dropout)
                else:
                    from ppkt.predict.detect import detect_scan

                    result = detect_scan(model, cfg.eval, frame, voxel, args.min_score, args.tile,
                                         3.0 if args.margin is None else args.margin * voxel, on_tile,
                                         cfg.data.features, cfg.data.color_dropout)
        entry = {"input": str(item), "kind": scan.kind, "points": int(len(scan.coord)), "voxels": result.voxels,
                 "tiles": result.tiles, "scale": args.scale, "up": args.up}
        note = missing_color_note(scan, cfg.data.features, cfg.data.color_dropout)
        if note:
            entry["note"] = note
            print(f"note: {note}", flush=True)
        if task == "segmentation":
            labels = result.labels
            files = [save_npy(out / f"{scan.name}.labels.npy", labels),
                     write_ply(out / f"{scan.name}.ply", scan.coord, colors[labels], "written by ppkt predict",
                               label=labels)]
            if not args.no_preview:
                files.append(preview(out / f"{scan.name}.png", frame.coord, labels, classes.names, colors,
                                     f"{scan.name}: {len(labels)} points, {classes.num_classes} classes "
                                     f"({Path(args.checkpoint).name})"))
            if args.format == "scannet":
                files.append(write_scannet_labels(out / f"{scan.name}.txt", labels, classes.name))
            counts = np.bincount(labels, minlength=classes.num_classes)
            entry["points_per_class"] = {n: int(c) for n, c in zip(classes.names, counts) if c}
            found = ", ".join(f"{classes.names[c]} {100 * counts[c] / len(labels):.0f} %" for c in np.argsort(-counts)[:4]
                              if counts[c])
        else:
            from ppkt.detection.evaluate import write_box_ply

            boxes = result.boxes.copy()
            if args.up == "z":  # back in the scan's units (a heading about z is the same in both frames)
                boxes[:, :6] /= args.scale
                entry["boxes_frame"] = "the scan's own coordinates"
            else:  # a box turned off the z axis has no (heading about z) form: they stay in the model's frame
                entry["boxes_frame"] = f"the model's: the scan turned from --up {args.up} to z up, times --scale"
            files = [save_npy(out / f"{scan.name}.boxes.npy", boxes),
                     write_box_ply(out / f"{scan.name}.boxes.ply", boxes, colors[boxes[:, 7].astype(int)])]
            if not args.no_preview:
                files.append(preview_boxes(out / f"{scan.name}.png", frame.coord,
                                           scan.color if scan.color is not None else np.full_like(frame.coord, 128),
                                           result.boxes, classes.names, colors,
                                           f"{scan.name}: {len(boxes)} boxes with score >= {args.min_score:g} "
                                           f"({Path(args.checkpoint).name})"))
            counts = np.bincount(boxes[:, 7].astype(np.int64), minlength=classes.num_classes) if len(boxes) else \
                np.zeros(classes.num_classes, np.int64)
            entry["boxes_per_class"] = {n: int(c) for n, c in zip(classes.names, counts) if c}
            entry["min_score"] = args.min_score
            found = ", ".join(f"{classes.names[c]} {counts[c]}" for c in np.argsort(-counts) if counts[c]) or "no box"
        entry["seconds"] = round(time.perf_counter() - t, 3)
        entry["files"] = [str(f) for f in files]
        summary["scans"].append(entry)
        print(f"{scan.name}: {entry['points']} points in {result.voxels} voxels, {result.tiles} tile(s), "
              f"{entry['seconds']:.1f} s: {found}\n  wrote " + ", ".join(str(f) for f in files), flush=True)
    write_json(out / "summary.json", summary)
    print(f"summary: {out / 'summary.json'}")
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "predict", "run a fine-tuned segmentation or detection model on your own scans",
                    epilog="inputs: .ply (cloud or mesh, binary or ASCII), a scene folder (coord.npy, color.npy), .npy "
                           "(N x 3/6/9: xyz, rgb, normal) or .npz (coord, color, normal), or a folder of RGB-D frames "
                           "with poses (fused at the model's voxel size). Outputs per input NAME in --out: "
                           "NAME.labels.npy (a class id per input point, input order), NAME.ply (coloured by class), "
                           "NAME.png (preview); for a detector NAME.boxes.npy (rows cx cy cz dx dy dz heading class "
                           "score), NAME.boxes.ply, NAME.png; and summary.json")
    p.add_argument("inputs", type=input_path, nargs="+", metavar="INPUT", help="scans to label")
    p.add_argument("--checkpoint", type=input_file, required=True, metavar="CKPT",
                   help="a `ppkt finetune` checkpoint (segmentation or --task detection; last.pt / best.pt)")
    p.add_argument("--out", type=output_dir, required=True, metavar="DIR", help="output folder (made if missing)")
    p.add_argument("--scale", type=number(above=0), default=1.0, help="multiply coordinates by this to get metres "
                                                            "(0.001 for millimetres)")
    p.add_argument("--up", default="z", choices=("z", "-z", "y", "-y", "x", "-x"), help="the scan's up axis")
    p.add_argument("--no-up-check", action="store_true", help="predict even when the floor is not across the up axis")
    p.add_argument("--tile", type=number(above=0), default=8.0, help="metres: the core of a tile on large scans")
    p.add_argument("--margin", type=count(0), default=None,
                   help="voxels of context around each tile (default: the network's receptive radius, so tiles give "
                        "the same labels as one pass; less is faster and approximate)")
    p.add_argument("--min-score", type=fraction, default=0.5,
                   help="detection: keep boxes whose objectness x class probability is at least this")
    p.add_argument("--format", choices=("ppkt", "scannet"), default="ppkt",
                   help="scannet: also NAME.txt, one NYU40 id per point (the ScanNet benchmark's submission format)")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    p.add_argument("--threads", type=count(0), default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_predict)
