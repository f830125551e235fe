"""`ppkt finetune`: supervised 3D semantic segmentation from scratch or from a PPKT backbone (paper 4.2 / 4.4).

Few-label protocols: data.label_fraction (a seeded share of the training scenes; data.stratified: chosen so that
every class present is kept), data.limited_points (k labelled points per scene) and model.freeze_backbone (a
linear probe of the backbone's features: only the classifier trains, batch-norm statistics adapt).

Every random choice is derived from (seed, iteration) or (seed, stream position), so a run stopped at a checkpoint
and resumed ends with the same weights as one that never stopped. Outputs in train.out_dir: config.yaml,
train_scenes.txt (the scenes trained on, after label_fraction / stratified), metrics.jsonl, tensorboard/, loss_curve.png,
checkpoints/last.pt (format "ppkt-finetune"), checkpoints/best.pt (the best on validation so far, with
its "val" scores) and eval/ (final evaluation on the val split, see ppkt.train.evaluate).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ppkt.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_atomic
from ppkt.config import config_to_dict, config_to_yaml
from ppkt.data.scenes import (ClassSet, SceneError, SegScenes, collate_scenes, get_class_set, list_scenes, scene_classes,
                              select_scenes, select_scenes_stratified)
from ppkt.models.segmentor import Segmentor, load_backbone
from ppkt.models.sparse_unet import set_bn_momentum
from ppkt.progress import Progress
from ppkt.provenance import stamp
from ppkt.train.distributed import Dist, training_process
from ppkt.train.evaluate import FINETUNE_FORMAT, class_colors, evaluate_model
from ppkt.train.finetune_config import FinetuneConfig, validate_finetune
from ppkt.train.interrupt import StopRequest
from ppkt.train.logging import IterationTimer, MetricsLog, plot_loss_curve
from ppkt.train.metrics import format_iou_table
from ppkt.train.run_dir import FINETUNE_SAFE_KEYS, check_resume, start_run
from ppkt.train.sampler import IterationBatchSampler, one_thread_worker
from ppkt.train.schedule import lambda_schedule, warmup_decay_factor
from ppkt.train.step import optimizer_step

def classes_to_dict(classes: ClassSet) -> dict:
    return {"name": classes.name, "names": list(classes.names), "segment_key": classes.segment_key,
            "ignore_index": classes.ignore_index}


def select_training_scenes(cfg: FinetuneConfig, scenes: List[Path], classes: ClassSet) -> Tuple[List[Path], str]:
    """The scenes trained on (data.label_fraction, data.stratified, train.seed) and a line saying how they were chosen."""
    d = cfg.data
    if d.scenes_file:
        from ppkt.data.few_labels import check_named_scenes, read_scenes_file

        names = read_scenes_file(d.scenes_file)
        check_named_scenes(names, [p.name for p in scenes], "data.scenes_file", d.scenes_file)
        wanted = set(names)
        return [p for p in scenes if p.name in wanted], f"the {len(wanted)} scenes of {d.scenes_file}"
    if d.label_fraction >= 1:
        return list(scenes), "all scenes"
    if not d.stratified:
        return select_scenes(scenes, d.label_fraction, cfg.train.seed), f"random {d.label_fraction:g} of the scenes"
    held = [scene_classes(p, classes) for p in scenes]
    chosen = select_scenes_stratified(scenes, d.label_fraction, cfg.train.seed, held)
    present, picked = set().union(*held), set(chosen)
    kept = set().union(*(h for p, h in zip(scenes, held) if p in picked))
    missing = [classes.names[c] for c in sorted(present - kept)]
    return chosen, (f"stratified {d.label_fraction:g} of the scenes: they hold {len(kept)} of the {len(present)} classes "
                    "present" + (f" (too few scenes for {', '.join(missing)})" if missing else ""))


def build_model(cfg: FinetuneConfig, num_classes: int, device: torch.device) -> Segmentor:
    """The Segmentor of model.arch / channels, initialised from torch's seed; backbone frozen for model.freeze_backbone."""
    from ppkt.data.features import in_channels

    model = Segmentor(cfg.model.arch, num_classes, in_channels(cfg.data.features), cfg.model.channels)
    model = set_bn_momentum(model, cfg.model.bn_momentum)
    model = model.to(device)
    return model.freeze_backbone() if cfg.model.freeze_backbone else model


def build_optimizer(cfg: FinetuneConfig, model: Segmentor):
    """Optimizer with two parameter groups (backbone at optim.lr, head at optim.head_lr) and its LambdaLR schedule;
    with model.freeze_backbone only the head group (the backbone's parameters are not in the optimizer)."""
    o = cfg.optim
    groups = [{"params": list(model.head.parameters()), "lr": o.lr if o.head_lr is None else o.head_lr, "name": "head"}]
    if not cfg.model.freeze_backbone:
        groups.insert(0, {"params": list(model.backbone.parameters()), "lr": o.lr, "name": "backbone"})
    if o.name == "sgd":
        opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    total = cfg.train.iterations
    sched = lambda_schedule(opt, lambda i: warmup_decay_factor(i, total, o.warmup, o.schedule, o.power))
    return opt, sched


def finetune(cfg: FinetuneConfig, resume: bool = False, stop_after: Optional[int] = None, overwrite: bool = False) -> Path:
    """Run (or resume) fine-tuning; returns the output folder. `stop_after` ends early (for tests).

    Checked before any work and before any folder is created: the config (`validate_finetune`), the output folder
    (a new run never replaces an old one unless `overwrite`), and on `resume` the config against the checkpoint's
    (only `FINETUNE_SAFE_KEYS` may change). SIGINT / SIGTERM stop after the current iteration, which is saved.
    """
    validate_finetune(cfg)
    out = Path(cfg.train.out_dir)
    start_run(out, out / "checkpoints" / "last.pt", resume, overwrite, "finetune")
    with StopRequest() as stop_request, training_process(cfg.train.device, cfg.train.threads) as (d, device):
        return _finetune(cfg, d, device, resume, stop_after, stop_request)


def _finetune(cfg: FinetuneConfig, d: Dist, device: torch.device, resume: bool, stop_after: Optional[int],
              stop_request: StopRequest) -> Path:
    out = Path(cfg.train.out_dir)
    ckpt_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    state = load_checkpoint(ckpt_path, FINETUNE_FORMAT) if resume else None
    if state is not None:
        check_resume(state["config"], cfg, FINETUNE_SAFE_KEYS, ckpt_path)
    classes = get_class_set(cfg.data.classes)
    colors = class_colors(classes.num_classes, cfg.data.classes)  # those of a classes.json, else a palette
    all_train = list_scenes(cfg.data.root, cfg.data.train_split, cfg.data.val_area)
    train_scenes, chosen_how = select_training_scenes(cfg, all_train, classes)
    names = [p.name for p in train_scenes]
    labelled = None
    if cfg.data.points_file:
        from ppkt.data.few_labels import check_named_scenes, read_points_file

        labelled = read_points_file(cfg.data.points_file)
        check_named_scenes(list(labelled), [p.name for p in all_train], "data.points_file", cfg.data.points_file)
    train_set = SegScenes(train_scenes, classes, cfg.data.voxel_size, train=True, augment=cfg.data.augment,
                          max_voxels=cfg.data.max_voxels, limited_points=cfg.data.limited_points, seed=cfg.train.seed,
                          labelled_points=labelled, labelled_points_file=cfg.data.points_file,
                          features=cfg.data.features, color_dropout=cfg.data.color_dropout)
    try:
        val_scenes = list_scenes(cfg.data.root, cfg.data.val_split, cfg.data.val_area) if cfg.data.val_split else []
    except SceneError as err:
        raise SceneError(f"{err}\n(to train without validation set data.val_split='')") from None
    val_set = SegScenes(val_scenes, classes, cfg.data.voxel_size, train=False, augment=False,
                        features=cfg.data.features) if val_scenes else None
    if state is not None and state["train_scenes"] != names:
        raise CheckpointError(f"{ckpt_path}: trained on other scenes than data.root / label_fraction / stratified / seed select now "
                              f"({len(state['train_scenes'])} vs {len(names)}); see {out / 'train_scenes.txt'}")

    torch.manual_seed(cfg.train.seed)  # initial weights
    model = build_model(cfg, classes.num_classes, device)
    optimizer, scheduler = build_optimizer(cfg, model)
    start, best = 0, {"iteration": 0, "miou": -1.0}
    if state is not None:
        load_state_strict(model, state["model"], ckpt_path, "model")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best = int(state["iteration"]), dict(state.get("best", best))
        if d.main:
            print(f"resuming {ckpt_path} at iteration {start}")
    elif cfg.model.pretrained:
        report = load_backbone(model, cfg.model.pretrained, cfg.data.features, cfg.model.adapt_input)
        if d.main:
            print(report.summary())
    elif d.main:
        print("training from scratch (no model.pretrained / --pretrained given)")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        if state is None:  # a resume never rewrites them
            (out / "config.yaml").write_text(config_to_yaml(cfg))
            (out / "train_scenes.txt").write_text("".join(n + "\n" for n in names))
        print(f"training on {len(names)} of {len(all_train)} scenes ({cfg.data.train_split}; {chosen_how}), "
              f"validating on {len(val_scenes)} ({cfg.data.val_split or 'none'}); {classes.num_classes} classes")
        if cfg.model.freeze_backbone:
            print(f"linear probe: backbone frozen (batch-norm statistics adapt), training the head only "
                  f"({sum(p.numel() for p in model.head.parameters())} parameters)")

    def checkpoint(done: int) -> dict:
        return {"format": FINETUNE_FORMAT, "version": 1, "iteration": done, "config": config_to_dict(cfg),
                "classes": classes_to_dict(classes), "class_colors": colors.tolist(), "train_scenes": names,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "best": best, "ppkt": stamp()}

    def save(done: int) -> None:
        if d.main:
            save_atomic(checkpoint(done), ckpt_path)
        d.barrier()

    def validated(done: int, s: dict) -> None:
        """Log the val scores of iteration `done`; keep the best model so far in best.pt (main process)."""
        log.log(done, {"val_miou": s["miou"], "val_macc": s["macc"], "val_allacc": s["allacc"]})
        if s["miou"] > best["miou"]:
            best.update(iteration=done, miou=s["miou"])
            save_atomic({**checkpoint(done), "val": {"miou": s["miou"], "macc": s["macc"], "allacc": s["allacc"]}}, best_path)

    stop = cfg.train.iterations if stop_after is None else min(cfg.train.iterations, stop_after)
    sampler = IterationBatchSampler(len(train_set), cfg.train.batch_size, cfg.train.seed, start, stop, d.rank, d.world_size)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_scenes, num_workers=cfg.train.workers,
                        worker_init_fn=one_thread_worker, pin_memory=device.type == "cuda", persistent_workers=False)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if d.world_size > 1 else model
    log = MetricsLog(out, start) if d.main else None
    if start:
        stop_request.already_saved = f"the checkpoint of iteration {start} ({ckpt_path})"
    t_last, voxels_since, timer = time.perf_counter(), 0, IterationTimer()
    model.train()
    with Progress(cfg.train.iterations, "finetune", initial=start, enabled=d.main) as progress:
        for it, batch in zip(range(start, stop), loader):
            timer.batch_ready()
            batch = batch.to(device)
            logits = net(batch.feats, batch.coords, batch.batch_size)
            labelled = batch.labels >= 0
            # a batch without any labelled voxel (possible with limited_points) still steps, with a zero loss
            loss = F.cross_entropy(logits, batch.labels, ignore_index=-1) if labelled.any() else logits.sum() * 0.0
            used = optimizer_step(loss, optimizer, scheduler, it, "lower optim.lr")
            lrs = {g["name"]: lr for g, lr in zip(optimizer.param_groups, used)}  # those of this iteration
            timer.step_done()
            voxels_since += batch.coords.shape[0] * d.world_size
            progress.update(1)
            done = it + 1
            if d.main and (done % cfg.train.log_every == 0 or done == stop or it == start):
                now = time.perf_counter()
                acc = (logits.argmax(1)[labelled] == batch.labels[labelled]).float().mean().item() if labelled.any() else float("nan")
                values = {"loss": loss.item(), "lr": lrs.get("backbone", 0.0), "head_lr": lrs["head"],
                          "train_voxel_acc": acc, "voxels_per_s": voxels_since / max(now - t_last, 1e-9), **timer.report()}
                t_last, voxels_since = now, 0
                log.log(done, values)
                # a linear probe trains its head only: its line shows the head's rate (the frozen backbone's is 0)
                progress.report(done, loss=values["loss"], lr=values["head_lr"] if cfg.model.freeze_backbone else values["lr"])
            if val_set is not None and cfg.train.eval_every and done % cfg.train.eval_every == 0 and done < cfg.train.iterations:
                if d.main:
                    s = evaluate_model(model, val_set, classes.names, device, workers=cfg.train.workers,
                                       split=cfg.data.val_split, progress=False)
                    validated(done, s)
                    progress.write(f"iteration {done}: {cfg.data.val_split} mIoU {100 * s['miou']:.2f}  "
                                   f"mAcc {100 * s['macc']:.2f}  allAcc {100 * s['allacc']:.2f}  "
                                   f"(best: iteration {best['iteration']}, mIoU {100 * best['miou']:.2f})")
                d.barrier()
            saved_now = done % cfg.train.checkpoint_every == 0 or done == stop
            if saved_now:
                save(done)
            stop_request.after_iteration(done, stop, cfg.train.iterations, saved_now, save, ckpt_path,
                                         f"ppkt finetune --config {out / 'config.yaml'} --resume", device,
                                         log.close if d.main else lambda: None)
            timer.iteration_done()
    if d.main:
        finished = stop == cfg.train.iterations and val_set is not None
        if finished:
            s = evaluate_model(model, val_set, classes.names, device, out_dir=out / "eval", scene_dirs=val_scenes,
                               ply=cfg.train.eval_ply, workers=cfg.train.workers, split=cfg.data.val_split, colors=colors)
            validated(stop, s)
            save_atomic(checkpoint(stop), ckpt_path)  # last.pt records the final best too
            print(format_iou_table(s))
        log.close()
        plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png", title="fine-tuning (semantic segmentation)",
                        ylabel="cross-entropy loss", smooth=True)
        print(f"checkpoint: {ckpt_path}\nmetrics: {out / 'metrics.jsonl'}  curve: {out / 'loss_curve.png'}"
              + (f"\nevaluation: {out / 'eval'}" if finished else ""))
        if best["iteration"]:
            print(f"best on {cfg.data.val_split}: iteration {best['iteration']}, mIoU {100 * best['miou']:.2f}: {best_path}")
    d.barrier()
    return out
