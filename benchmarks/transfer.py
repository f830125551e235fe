"""The transfer benchmark (paper Figure 4, on the synthetic world): does PPKT pretraining help fine-tuning?

Steps (each skipped when its result already exists, so a stopped run continues):
1. write the synthetic world (`ppkt synth`): unlabelled frames for pretraining, labelled 3D scenes;
2. train the 2D segmentation teacher on the rendered 2D labels (`ppkt teacher train`, default settings);
3. pretrain the student with PPKT for each teacher ((a) ImageNet EfficientNet-Lite0, (b) the teacher of step 2)
   and each 3D frame of the pretraining clouds (`--frames`: camera, or world = z-up like the fine-tuning scenes);
4. fine-tune on 5 / 15 / 50 / 100 % of the labelled training scenes from scratch and from every pretrained
   backbone, 3 seeds each;
5. write the mIoU table (mean +- std over seeds, markdown) and the plot of mIoU versus label fraction.

    python benchmarks/transfer.py --out runs/transfer          # or: make bench-transfer
    # the controlled comparison of docs/transfer_benchmark.md (camera vs world frame, one teacher):
    python benchmarks/transfer.py --out runs/frames --teachers imagenet-effnet --frames camera world \
        --fractions 0.05 0.5 --finetune-iterations 200 --report transfer_frames.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Optional

import torch

from ppkt.config import load_config
from ppkt.synthetic.dataset import write_dataset
from ppkt.train.finetune import finetune
from ppkt.train.finetune_config import FinetuneConfig
from ppkt.train.pretrain import pretrain
from ppkt.train.run_dir import config_changes, finished_with, mark_finished, run_settings
from ppkt.train.teacher2d import train_teacher2d

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = ("imagenet-effnet", "synthetic-seg-teacher")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/transfer")
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--frames-per-scene", type=int, default=25)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.15, 0.5, 1.0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--teacher-iterations", type=int, default=800)
    p.add_argument("--pretrain-iterations", type=int, default=300)
    p.add_argument("--finetune-iterations", type=int, default=60)
    p.add_argument("--max-voxels", type=int, default=8000, help="fine-tuning crop per training scene")
    p.add_argument("--teachers", nargs="+", choices=TEACHERS, default=list(TEACHERS))
    p.add_argument("--frames", nargs="+", choices=("world", "camera"), default=["camera"],
                   help="3D frame of the pretraining clouds (data.frame), one pretraining run each")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads of every stage")
    p.add_argument("--backbone-lr", type=float, default=None,
                   help="fine-tuning lr of the backbone (0: a linear probe of frozen features; the head keeps --head-lr)")
    p.add_argument("--head-lr", type=float, default=0.1, help="fine-tuning lr of the classifier with --backbone-lr")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="where the table and the plot go")
    p.add_argument("--report", default="transfer_benchmark.md", help="file name of the table in --docs; the plot is "
                   "images/<its stem>.png")
    args = p.parse_args()
    out = Path(args.out)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    timings = out / "timings.json"  # seconds of work done per stage, summed over resumed runs
    clock = json.loads(timings.read_text()) if timings.is_file() else {}

    def spent(stage: str, t0: float) -> None:
        clock[stage] = clock.get(stage, 0.0) + time.perf_counter() - t0
        timings.write_text(json.dumps(clock, indent=2))

    t = time.perf_counter()
    world = write_dataset(out / "world", scenes=args.scenes, frames_per_scene=args.frames_per_scene, seed=0, workers=2)
    spent("synth", t)

    teacher_ckpt, teacher_eval = out / "teacher2d" / "resnet18_fcn.pth", None
    if "synthetic-seg-teacher" in args.teachers:
        t = time.perf_counter()
        trained = torch.load(teacher_ckpt, map_location="cpu", weights_only=True)["train"] if teacher_ckpt.is_file() else {}
        if (trained.get("iterations"), trained.get("data_root"), trained.get("image_size")) != (
                args.teacher_iterations, str(world), [240, 320]):  # reuse only the teacher these settings make
            train_teacher2d(world, teacher_ckpt, iterations=args.teacher_iterations, image_size=(240, 320))
            spent("teacher2d", t)
        teacher_eval = torch.load(teacher_ckpt, map_location="cpu", weights_only=True)["metrics"]["val"]

    teachers = {
        "imagenet-effnet": [],
        "synthetic-seg-teacher": ["teacher.arch=resnet18", f"teacher.weights={teacher_ckpt}", "teacher.stage=layer3"],
    }
    backbones = {"scratch": None}
    for teacher in args.teachers:
        for frame in args.frames:
            name = f"ppkt-{teacher}-{frame}"
            run, t = out / "pretrain" / name, time.perf_counter()
            cfg = load_config(ROOT / "configs" / "pretrain_synthetic.yaml", [
                f"data.roots=[{world / 'frames'}]", f"data.frame={frame}", f"train.iterations={args.pretrain_iterations}",
                f"train.threads={args.threads}", f"train.out_dir={run}", *teachers[teacher]])
            inputs = {"teacher": teacher_ckpt} if teacher == "synthetic-seg-teacher" else {}
            settings = run_settings(cfg, inputs)
            if not finished_with(run, settings, run / "backbone.pth"):
                _pretrain_or_extend(cfg, run, settings)
                mark_finished(run, settings)
                spent("pretrain", t)
            backbones[name] = run / "backbone.pth"

    results = {}
    for fraction in args.fractions:
        for init, backbone in backbones.items():
            for seed in range(args.seeds):
                probe = [] if args.backbone_lr is None else [f"optim.lr={args.backbone_lr}", f"optim.head_lr={args.head_lr}"]
                tag = "" if args.backbone_lr is None else f"_blr{args.backbone_lr:g}"
                run = out / "finetune" / f"{init}_f{fraction:g}_s{seed}{tag}"
                metrics = run / "eval" / "metrics.json"
                cfg = load_config(ROOT / "configs" / "finetune_synthetic.yaml", [
                    f"data.root={world}", f"data.classes={world / 'classes.json'}", f"data.label_fraction={fraction}",
                    f"train.seed={seed}", f"train.iterations={args.finetune_iterations}", "train.eval_every=0",
                    "train.checkpoint_every=100000", "train.eval_ply=false", f"train.out_dir={run}",
                    f"data.max_voxels={args.max_voxels}", f"train.threads={args.threads}",
                    f"model.pretrained={backbone or 'null'}", *probe], FinetuneConfig)
                settings = run_settings(cfg, {"backbone": backbone} if backbone else {})
                if not finished_with(run, settings, metrics):  # any other setting: run it again
                    t = time.perf_counter()
                    finetune(cfg, overwrite=True)
                    mark_finished(run, settings)
                    spent("finetune", t)
                results.setdefault(init, {}).setdefault(fraction, []).append(json.loads(metrics.read_text())["miou"])

    report = write_report(results, teacher_eval, clock, args, Path(args.docs))
    (out / "results.json").write_text(json.dumps({"miou": {k: {str(f): v for f, v in r.items()} for k, r in results.items()},
                                                   "teacher2d": teacher_eval, "seconds": clock}, indent=2))
    print(report)


def _pretrain_or_extend(cfg, run: Path, settings: dict) -> None:
    """Continue a stopped run made with the same settings (train.iterations may differ: resuming is exact, and a
    shorter earlier run is its prefix); anything else starts over."""
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True) if last.is_file() else None
    same = state is not None and not config_changes(state["config"], settings["config"], ["train.iterations"]) \
        and state["iteration"] <= cfg.train.iterations
    pretrain(cfg, resume=same, overwrite=not same)


def write_report(results: dict, teacher_eval: Optional[dict], clock: dict, args, docs: Path) -> str:
    """Markdown table (mIoU %, mean +- std over seeds) in docs/<args.report> and its plot in docs/images/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({f for r in results.values() for f in r})
    lines = ["| init | " + " | ".join(f"{100 * f:g} % scenes" for f in fractions) + " |",
             "| --- |" + " --- |" * len(fractions)]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for init, by_fraction in results.items():
        means = [100 * statistics.mean(by_fraction[f]) for f in fractions]
        stds = [100 * (statistics.stdev(by_fraction[f]) if len(by_fraction[f]) > 1 else 0.0) for f in fractions]
        lines.append(f"| {init} | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in zip(means, stds)) + " |")
        ax.errorbar([100 * f for f in fractions], means, yerr=stds, marker="o", capsize=3, label=init)
    ax.set_xscale("log")
    ax.minorticks_off()  # only the label fractions are labelled
    ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g}" for f in fractions])
    ax.set_xlabel("labelled training scenes (%)")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title("synthetic world: fine-tuning after PPKT vs scratch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plot = Path("images") / (Path(args.report).stem + ".png")
    (docs / "images").mkdir(parents=True, exist_ok=True)
    fig.savefig(docs / plot)
    plt.close(fig)
    minutes = ", ".join(f"{k} {v / 60:.1f} min" for k, v in clock.items()) + f"; total {sum(clock.values()) / 60:.1f} min (2 CPU cores)"
    teacher_line = [] if teacher_eval is None else [
        f"2D teacher (ResNet-18 FCN on rendered labels, {args.teacher_iterations} iterations): held-out pixel accuracy "
        f"{100 * teacher_eval.get('allacc', teacher_eval.get('pixel_accuracy', float('nan'))):.1f} %, "  # old key: pixel_accuracy
        f"mIoU {100 * teacher_eval.get('miou', teacher_eval.get('mean_iou', float('nan'))):.1f} %.", ""]  # old: mean_iou
    text = "\n".join([
        "# Transfer benchmark (synthetic world)", "",
        f"{args.scenes} scenes x {args.frames_per_scene} frames; PPKT {args.pretrain_iterations} iterations "
        f"(pretraining frame: {', '.join(args.frames)}); fine-tuning {args.finetune_iterations} iterations per run"
        f"{'' if args.backbone_lr is None else f' with backbone lr {args.backbone_lr:g} (head {args.head_lr:g})'}, "
        f"{args.seeds} seeds; val mIoU (%) on the held-out scenes.", "",
        *lines, "", *teacher_line,
        f"Time: {minutes}", "", f"![mIoU versus label fraction]({plot.as_posix()})", ""])
    (docs / args.report).write_text(text)
    return text


if __name__ == "__main__":
    main()
