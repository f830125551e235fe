"""`ppkt info FILE...`: what a file ppkt wrote holds and what made it (checkpoints, exports, Pointcept exports,
2D teachers, benchmark results, evaluation metrics, prediction summaries), read without unpickling code."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

from ppkt.commands import add_command
from ppkt.errors import UserError


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"[{', '.join(map(str, value[:3]))}, ... {len(value)} in all]"
    return str(value)


def _params(state: Dict) -> int:
    return int(sum(v.numel() for v in state.values() if hasattr(v, "numel")))


def describe_torch(obj: Any, path: Path) -> List[str]:
    fmt = obj.get("format") if isinstance(obj, dict) else None
    lines: List[str] = []
    add = lambda k, v: lines.append(f"  {k}: {_fmt(v)}")  # noqa: E731
    stamp = obj.get("ppkt", {}) if isinstance(obj, dict) else {}
    if fmt == "ppkt-backbone":
        lines.append("ppkt backbone export (pretrained weights for `ppkt finetune --pretrained`)")
        add("architecture", f"{obj['arch']}, widths {obj['channels']}, {obj['in_channels']} input channels")
        add("parameters", _params(obj["state_dict"]))
        for k, v in obj.get("pretrain", {}).items():
            add(k, v)
    elif fmt in ("ppkt-finetune", "ppkt-detection", "ppkt-pretrain-checkpoint"):
        kind = {"ppkt-finetune": "segmentation fine-tuning checkpoint", "ppkt-detection": "detection checkpoint",
                "ppkt-pretrain-checkpoint": "pretraining checkpoint"}[fmt]
        lines.append(f"ppkt {kind}")
        cfg = obj.get("config", {})
        model = cfg.get("model") or cfg.get("student") or {}
        add("architecture", f"{model.get('arch')}, widths {model.get('channels')}")
        add("iteration", f"{obj.get('iteration')} of {cfg.get('train', {}).get('iterations')}")
        data = cfg.get("data", {})
        add("voxel size (m)", data.get("voxel_size"))
        add("data", data.get("root") or data.get("roots"))
        if "teacher" in cfg:
            add("teacher", f"{cfg['teacher'].get('arch')} ({cfg['teacher'].get('weights')}), {cfg['teacher'].get('stage')}")
        if model.get("pretrained") is not None or "model" in cfg:
            add("started from", model.get("pretrained") or "scratch")
        if "classes" in obj:
            names = obj["classes"].get("names", [])
            add("classes", f"{len(names)} ({obj['classes'].get('name')}): {', '.join(names)}")
        if "train_scenes" in obj:
            add("training scenes", len(obj["train_scenes"]))
        if obj.get("best", {}).get("iteration"):
            add("best on val", obj["best"])
        if obj.get("loss") is not None:
            add("last loss", obj["loss"])
    elif fmt == "ppkt-teacher2d-run":
        cfg = obj.get("config", {})
        lines.append("ppkt 2D teacher training state (continue with `ppkt teacher train ... --resume`)")
        add("architecture", cfg.get("arch"))
        add("iteration", f"{obj.get('iteration')} of {cfg.get('train', {}).get('iterations')}")
        add("data", cfg.get("data"))
    elif fmt == "ppkt-teacher2d":
        lines.append("ppkt 2D segmentation teacher")
        add("architecture", obj.get("arch"))
        add("classes", f"{obj.get('num_classes')}: {', '.join(obj.get('class_names', []))}")
        for k in ("data_root", "train_frames", "iterations"):
            add(k, obj.get("train", {}).get(k))
        add("val", {k: v for k, v in (obj.get("metrics", {}).get("val") or {}).items() if k in ("miou", "allacc")})
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and any(
            k.startswith("backbone.") for k in obj["state_dict"]):
        meta = obj.get("meta", {})
        lines.append("Pointcept checkpoint (SpUNet-v1m1 backbone keys)" + (" exported by ppkt" if meta.get("source") == "ppkt" else ""))
        add("parameters", _params(obj["state_dict"]))
        for k, v in meta.items():
            if k != "exported_by":
                add(k, v)
        stamp = meta.get("exported_by", {})
    else:
        raise UserError(f"{path}: not a file ppkt wrote (format {fmt!r})")
    if stamp:
        add("written by", f"ppkt {stamp.get('ppkt_version')}, commit {stamp.get('commit')}")
    return lines


def describe_json(obj: Any, path: Path) -> List[str]:
    if isinstance(obj, dict) and obj.get("format") == "ppkt-benchmark-results":
        runs = obj["runs"]
        stages: Dict[str, int] = {}
        for r in runs:
            stages[r.get("stage", "?")] = stages.get(r.get("stage", "?"), 0) + 1
        codes = sorted({r.get("code", "?") for r in runs})
        return ["ppkt benchmark results", f"  records: {len(runs)} ({', '.join(f'{k} {v}' for k, v in stages.items())})",
                f"  code: {', '.join(codes)}"]
    if isinstance(obj, dict) and "scans" in obj and "model" in obj:
        lines = ["ppkt predict summary", f"  checkpoint: {obj.get('checkpoint')}",
                 f"  model: {obj['model'].get('arch')}, {len(obj['model'].get('classes', []))} classes, "
                 f"voxel {obj['model'].get('voxel_size')} m"]
        lines += [f"  {s['input']}: {s['points']} points, {s.get('seconds')} s" for s in obj["scans"]]
        return lines
    if isinstance(obj, dict) and "miou" in obj and "confusion_matrix" in obj:
        return ["ppkt evaluation metrics", f"  split: {obj.get('split')}, {obj.get('scenes')} scenes",
                f"  mIoU {100 * obj['miou']:.2f}, mAcc {100 * obj['macc']:.2f}, allAcc {100 * obj['allacc']:.2f}"]
    if isinstance(obj, dict) and "mAP@0.25" in obj:
        return ["ppkt detection metrics", f"  mAP@0.25 {100 * obj['mAP@0.25']:.2f}, mAP@0.5 {100 * obj['mAP@0.5']:.2f}"]
    raise UserError(f"{path}: a JSON file ppkt does not know")


def describe_npy(path: Path) -> List[str]:
    """A NumPy array (predictions' .labels.npy / .boxes.npy, scene files): its shape, type and value range."""
    import numpy as np

    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UserError(f"{path}: not a NumPy array file ppkt can read ({err})") from None
    kind = {".labels": "ppkt predict's labels (one class id a point, -1: no prediction)",
            ".boxes": "ppkt predict's boxes ([cx, cy, cz, dx, dy, dz, heading, class, score] a row)"}.get(
        Path(path.stem).suffix, "NumPy array")
    lines = [kind, f"  shape: {tuple(a.shape)}, {a.dtype}"]
    if a.size and a.dtype.kind in "iuf":
        lines.append(f"  values: {_fmt(a.min().item())} to {_fmt(a.max().item())}")
    return lines


def describe(path: Path) -> List[str]:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".json":
        try:
            return describe_json(json.loads(path.read_text()), path)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
    if path.suffix == ".npy":
        return describe_npy(path)
    import torch

    from ppkt.checkpoint import load_problem

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a torch file, or pickled code
        raise UserError(f"{path}: not a file ppkt can read ({load_problem(err)})") from None
    return describe_torch(obj, path)


def _info(args: argparse.Namespace) -> int:
    for i, item in enumerate(args.files):
        print(("\n" if i else "") + f"{item}: " + "\n".join(describe(Path(item))))
    return 0


def add_commands(subparsers) -> None:
    p = add_command(subparsers, "info", "say what a file ppkt wrote holds and what made it",
                    epilog="checkpoints (pretraining, fine-tuning, detection), backbone exports, Pointcept exports, 2D "
                           "teachers, benchmark results.json, metrics.json, predict's summary.json and .npy outputs")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_info)
