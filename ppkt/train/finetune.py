"""`ppkt finetune`: supervised 3D semantic segmentation from scratch or from a PPKT backbone (paper 4.2 / 4.4).

Every random choice is derived from (seed, iteration) or (seed, stream position), so a run stopped at a checkpoint
and resumed ends with the same weights as one that never stopped. Outputs in train.out_dir: config.yaml,
train_scenes.txt (the scenes trained on, after label_fraction), metrics.jsonl, tensorboard/, loss_curve.png,
checkpoints/last.pt (format "ppkt-finetune") and eval/ (final evaluation on the val split, see ppkt.train.evaluate).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ppkt.config import ConfigError, config_to_dict, config_to_yaml, load_config
from ppkt.data.scenes import ClassSet, SceneError, SegScenes, collate_scenes, get_class_set, list_scenes, select_scenes
from ppkt.models.segmentor import Segmentor, load_backbone
from ppkt.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_atomic
from ppkt.train.distributed import Dist, training_process
from ppkt.train.evaluate import FINETUNE_FORMAT, class_colors, evaluate_model, format_scores
from ppkt.train.finetune_config import FinetuneConfig
from ppkt.train.logging import MetricsLog, plot_loss_curve
from ppkt.train.sampler import IterationBatchSampler, one_thread_worker


def check_config(cfg: FinetuneConfig) -> None:
    """ConfigError naming the key for values the dataclass types cannot rule out."""
    checks = [
        (cfg.data.root != "", "data.root", "is empty; set it to the dataset folder"),
        (0 < cfg.data.label_fraction <= 1, "data.label_fraction", "must be in (0, 1]"),
        (cfg.data.voxel_size > 0, "data.voxel_size", "must be > 0 metres"),
        (cfg.optim.name in ("sgd", "adamw"), "optim.name", "must be sgd or adamw"),
        (cfg.optim.schedule in ("poly", "cosine"), "optim.schedule", "must be poly or cosine"),
        (cfg.optim.warmup >= 0, "optim.warmup", "must be >= 0"),
        (cfg.train.iterations >= 1, "train.iterations", "must be >= 1"),
        (cfg.train.eval_every >= 0, "train.eval_every", "must be >= 0"),
        (cfg.train.log_every >= 1 and cfg.train.checkpoint_every >= 1, "train.log_every / checkpoint_every", "must be >= 1"),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise ConfigError(f"{key} {msg}")


def classes_to_dict(classes: ClassSet) -> dict:
    return {"name": classes.name, "names": list(classes.names), "segment_key": classes.segment_key,
            "ignore_index": classes.ignore_index}


def lr_factor(i: int, total: int, warmup: int, schedule: str, power: float) -> float:
    """Multiplier of the peak lr at iteration i: linear warmup over `warmup` iterations, then poly or cosine to 0."""
    if i < warmup:
        return (i + 1) / warmup
    t = min(max((i - warmup) / max(total - warmup, 1), 0.0), 1.0)
    return (1.0 - t) ** power if schedule == "poly" else 0.5 * (1.0 + math.cos(math.pi * t))


def build_optimizer(cfg: FinetuneConfig, model: Segmentor):
    """Optimizer with two parameter groups (backbone at optim.lr, head at optim.head_lr) and its LambdaLR schedule."""
    o = cfg.optim
    groups = [{"params": list(model.backbone.parameters()), "lr": o.lr, "name": "backbone"},
              {"params": list(model.head.parameters()), "lr": o.lr if o.head_lr is None else o.head_lr, "name": "head"}]
    if o.name == "sgd":
        opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    total = cfg.train.iterations
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, total, o.warmup, o.schedule, o.power))
    return opt, sched


def finetune(cfg: FinetuneConfig, resume: bool = False, stop_after: Optional[int] = None) -> Path:
    """Run (or resume) fine-tuning; returns the output folder. `stop_after` ends early (for tests)."""
    check_config(cfg)
    with training_process(cfg.train.device, cfg.train.threads) as (d, device):
        return _finetune(cfg, d, device, resume, stop_after)


def _finetune(cfg: FinetuneConfig, d: Dist, device: torch.device, resume: bool, stop_after: Optional[int]) -> Path:
    out = Path(cfg.train.out_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    classes = get_class_set(cfg.data.classes)
    colors = class_colors(classes.num_classes, cfg.data.classes)  # those of a classes.json, else a palette
    all_train = list_scenes(cfg.data.root, cfg.data.train_split)
    train_scenes = all_train if cfg.data.label_fraction >= 1 else select_scenes(all_train, cfg.data.label_fraction, cfg.train.seed)
    names = [p.name for p in train_scenes]
    train_set = SegScenes(train_scenes, classes, cfg.data.voxel_size, train=True, augment=cfg.data.augment,
                          max_voxels=cfg.data.max_voxels, limited_points=cfg.data.limited_points, seed=cfg.train.seed)
    try:
        val_scenes = list_scenes(cfg.data.root, cfg.data.val_split) if cfg.data.val_split else []
    except SceneError as err:
        raise SceneError(f"{err}\n(to train without validation set data.val_split='')") from None
    val_set = SegScenes(val_scenes, classes, cfg.data.voxel_size, train=False, augment=False) if val_scenes else None

    torch.manual_seed(cfg.train.seed)  # initial weights
    model = Segmentor(cfg.model.arch, classes.num_classes, 3, cfg.model.channels).to(device)
    optimizer, scheduler = build_optimizer(cfg, model)
    start = 0
    if resume:
        state = load_checkpoint(ckpt_path, FINETUNE_FORMAT)
        arch = lambda m: {"arch": m["arch"], "channels": m["channels"]}  # noqa: E731
        for what, then, now in (("model", arch(state["config"]["model"]), arch(config_to_dict(cfg)["model"])),
                                ("classes", state["classes"], classes_to_dict(classes))):
            if then != now:
                raise CheckpointError(f"{ckpt_path}: made for {what} {then}, the config asks {now}")
        if state["train_scenes"] != names:
            raise CheckpointError(f"{ckpt_path}: trained on other scenes than data.root / label_fraction / seed select now "
                                  f"({len(state['train_scenes'])} vs {len(names)}); see {out / 'train_scenes.txt'}")
        load_state_strict(model, state["model"], ckpt_path, "model")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["iteration"])
        if d.main:
            print(f"resuming {ckpt_path} at iteration {start}")
    elif cfg.model.pretrained:
        report = load_backbone(model, cfg.model.pretrained)
        if d.main:
            print(report.summary())
    elif d.main:
        print("training from scratch (no model.pretrained / --pretrained given)")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(config_to_yaml(cfg))
        (out / "train_scenes.txt").write_text("".join(n + "\n" for n in names))
        print(f"training on {len(names)} of {len(all_train)} scenes ({cfg.data.train_split}), "
              f"validating on {len(val_scenes)} ({cfg.data.val_split or 'none'}); {classes.num_classes} classes")

    stop = cfg.train.iterations if stop_after is None else min(cfg.train.iterations, stop_after)
    sampler = IterationBatchSampler(len(train_set), cfg.train.batch_size, cfg.train.seed, start, stop, d.rank, d.world_size)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_scenes, num_workers=cfg.train.workers,
                        worker_init_fn=one_thread_worker, pin_memory=device.type == "cuda", persistent_workers=False)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if d.world_size > 1 else model
    log = MetricsLog(out, start) if d.main else None
    bar = tqdm(total=cfg.train.iterations, initial=start, desc="finetune", unit="it", disable=not d.main, dynamic_ncols=True)
    t_last, voxels_since = time.perf_counter(), 0
    model.train()
    for it, batch in zip(range(start, stop), loader):
        batch = batch.to(device)
        logits = net(batch.feats, batch.coords, batch.batch_size)
        labelled = batch.labels >= 0
        # a batch without any labelled voxel (possible with limited_points) still steps, with a zero loss
        loss = F.cross_entropy(logits, batch.labels, ignore_index=-1) if labelled.any() else logits.sum() * 0.0
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"iteration {it}: loss is {loss.item()}; lower optim.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lrs = [g["lr"] for g in optimizer.param_groups]  # those of this iteration
        scheduler.step()
        voxels_since += batch.coords.shape[0] * d.world_size
        bar.update(1)
        done = it + 1
        if d.main and (done % cfg.train.log_every == 0 or done == stop or it == start):
            now = time.perf_counter()
            acc = (logits.argmax(1)[labelled] == batch.labels[labelled]).float().mean().item() if labelled.any() else float("nan")
            values = {"loss": loss.item(), "lr": lrs[0], "head_lr": lrs[1],
                      "train_voxel_acc": acc, "voxels_per_s": voxels_since / max(now - t_last, 1e-9)}
            t_last, voxels_since = now, 0
            log.log(done, values)
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.3g}")
        if val_set is not None and cfg.train.eval_every and done % cfg.train.eval_every == 0 and done < cfg.train.iterations:
            if d.main:
                s = evaluate_model(model, val_set, classes.names, device, workers=cfg.train.workers, split=cfg.data.val_split,
                                   progress=False)
                log.log(done, {"val_miou": s["miou"], "val_macc": s["macc"], "val_allacc": s["allacc"]})
                bar.write(f"iteration {done}: {cfg.data.val_split} mIoU {100 * s['miou']:.2f}  mAcc {100 * s['macc']:.2f}  "
                          f"allAcc {100 * s['allacc']:.2f}")
            d.barrier()
        if done % cfg.train.checkpoint_every == 0 or done == stop:
            if d.main:
                save_atomic({"format": FINETUNE_FORMAT, "version": 1, "iteration": done, "config": config_to_dict(cfg),
                             "classes": classes_to_dict(classes), "class_colors": colors.tolist(), "train_scenes": names,
                             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict()}, ckpt_path)
            d.barrier()
    bar.close()
    if d.main:
        if stop == cfg.train.iterations and val_set is not None:
            s = evaluate_model(model, val_set, classes.names, device, out_dir=out / "eval", scene_dirs=val_scenes,
                               ply=cfg.train.eval_ply, workers=cfg.train.workers, split=cfg.data.val_split, colors=colors)
            log.log(stop, {"val_miou": s["miou"], "val_macc": s["macc"], "val_allacc": s["allacc"]})
            print(format_scores(s))
        log.close()
        plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png", title="fine-tuning (semantic segmentation)",
                        ylabel="cross-entropy loss", smooth=True)
        print(f"checkpoint: {ckpt_path}\nmetrics: {out / 'metrics.jsonl'}  curve: {out / 'loss_curve.png'}"
              + (f"\nevaluation: {out / 'eval'}" if stop == cfg.train.iterations and val_set is not None else ""))
    d.barrier()
    return out


# ------------------------------------------------------------------------------------------------ CLI
def _finetune_cmd(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"model.pretrained={args.pretrained}"] if args.pretrained else [])
    cfg = load_config(args.config, overrides, FinetuneConfig)
    try:
        finetune(cfg, resume=args.resume)
    except SceneError as err:
        raise ConfigError(str(err)) from None
    return 0


def _evaluate_cmd(args: argparse.Namespace) -> int:
    from ppkt.train.evaluate import evaluate_checkpoint

    try:
        s = evaluate_checkpoint(args.checkpoint, args.data, args.split, args.out, args.device, args.workers, not args.no_ply)
    except SceneError as err:
        raise ConfigError(str(err)) from None
    print(format_scores(s))
    print(f"wrote {Path(s['out_dir'])}: metrics.json, confusion.png" + ("" if args.no_ply else ", ply/"))
    return 0


def add_finetune_commands(subparsers) -> None:
    """Register `ppkt finetune` and `ppkt evaluate` on the CLI's subparsers."""
    p = subparsers.add_parser("finetune", help="fine-tune 3D semantic segmentation, from scratch or a pretrained backbone")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/finetune_synthetic.yaml")
    p.add_argument("--pretrained", default=None, metavar="CKPT", help="backbone export of `ppkt pretrain` (backbone.pth)")
    p.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/checkpoints/last.pt")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.label_fraction=0.2")
    p.set_defaults(func=_finetune_cmd)

    p = subparsers.add_parser("evaluate", help="score a fine-tuned checkpoint on the original points of a split")
    p.add_argument("--checkpoint", required=True, help="a `ppkt finetune` checkpoint, e.g. runs/x/checkpoints/last.pt")
    p.add_argument("--data", default=None, metavar="ROOT", help="dataset folder (default: the one it was trained on)")
    p.add_argument("--split", default="val")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <run>/eval_<split>)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, default=0, help="scene-loading processes")
    p.add_argument("--no-ply", action="store_true", help="skip the per-scene PLY files")
    p.set_defaults(func=_evaluate_cmd)
