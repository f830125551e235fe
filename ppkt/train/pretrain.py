"""`ppkt pretrain`: the PPKT training loop (frozen teacher; student, g2D and g3D learn).

Every random choice is derived from (seed, iteration) or (seed, stream position), so a run stopped at a
checkpoint and resumed ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Set, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ppkt.checkpoint import BACKBONE_FORMAT, PRETRAIN_FORMAT, load_checkpoint, load_state_strict, save_atomic
from ppkt.config import ConfigError, PretrainConfig, config_to_dict, config_to_yaml, validate_pretrain
from ppkt.data.features import in_channels
from ppkt.data.pairs import FramePairs, collate_pairs
from ppkt.data.teacher_cache import TeacherCache
from ppkt.data.views import ViewPairs, collate_views
from ppkt.models.baselines import CRD, ENCODER, FRAME_LEVEL, PPKD, GlobalKD, Gupta
from ppkt.models.heads import UPL, Projection3D
from ppkt.models.catalog import teacher_key
from ppkt.models.pointcontrast import PointContrast
from ppkt.models.ppkt import PPKT
from ppkt.models.sparse_unet import build_sparse_unet
from ppkt.models.seg_teacher import load_seg_teacher
from ppkt.models.teacher import ImageClassifier, build_teacher
from ppkt.progress import Progress
from ppkt.provenance import stamp
from ppkt.train.distributed import Dist, mixed_precision, sync_batchnorm, training_process
from ppkt.train.interrupt import StopRequest
from ppkt.train.logging import IterationTimer, MetricsLog, plot_loss_curve
from ppkt.train.run_dir import PRETRAIN_SAFE_KEYS, check_resume, start_run
from ppkt.train.sampler import IterationBatchSampler, one_thread_worker
from ppkt.train.schedule import exponential_factor, lambda_schedule
from ppkt.train.step import optimizer_step

def build_model(cfg: PretrainConfig) -> torch.nn.Module:
    """From a validated config: loss.name=ppnce: teacher (frozen) + student + g2D (UPL, or PL for loss.projection=pl)
    + g3D (PPKT); loss.name=pointcontrast: student + g3D (PointContrast, no 2D network); the baselines of
    `ppkt.models.baselines`: their teacher (frozen) + student + their heads."""
    name, l = cfg.loss.name, cfg.loss

    def student() -> torch.nn.Module:
        return build_sparse_unet(cfg.student.arch, in_channels=in_channels(cfg.data.features),
                                 channels=cfg.student.channels)

    if name == "pointcontrast":
        s = student()
        return PointContrast(s, Projection3D(s.out_channels, l.embed_dim), l.n_sub, l.temperature)
    if name == "ppkd":
        teacher = load_seg_teacher(cfg.teacher.weights)
        if teacher.arch != teacher_key(cfg.teacher.arch):
            raise ConfigError(f"teacher.arch: {cfg.teacher.weights} is a {teacher.arch} segmentation teacher, but "
                              f"teacher.arch={cfg.teacher.arch}; set teacher.arch={teacher.arch}")
        return PPKD(teacher, student(), teacher.num_classes, l.n_sub, l.kd_temperature)
    if name == "global_kd":
        teacher = ImageClassifier(cfg.teacher.weights)
        return GlobalKD(teacher, student(), teacher.num_classes, l.kd_temperature)
    # built in this order, so that a seed gives the same initial weights as always
    teacher = build_teacher(cfg.teacher.arch, cfg.teacher.weights, cfg.teacher.stage)
    if name == "gupta":
        return Gupta(teacher, student())
    if name == "crd":
        return CRD(teacher, student(), l.embed_dim, l.bank_size, l.temperature)
    s = student()
    g2d = UPL(teacher.out_channels, l.embed_dim, upsample=l.projection == "upl")
    g3d = Projection3D(s.out_channels, l.embed_dim)
    return PPKT(teacher, s, g2d, g3d, l.n_sub, l.temperature, l.gather_negatives)


def build_dataset(cfg: PretrainConfig, cache: Optional[TeacherCache]) -> Tuple[Dataset, Callable]:
    """The training samples and their collate function for loss.name."""
    if cfg.loss.name == "pointcontrast":
        return ViewPairs(cfg.data, cfg.augment, cfg.data.pairs, cfg.loss.match_radius), collate_views
    return FramePairs(cfg.data, cfg.augment, cache), collate_pairs


def trainable(model: torch.nn.Module) -> torch.nn.ModuleDict:
    """The modules pretraining updates: every child but the teacher (frozen, rebuilt from the config, never saved)."""
    return torch.nn.ModuleDict({name: m for name, m in model.named_children() if name != "teacher"})


def exponential_schedule(optimizer: torch.optim.Optimizer, gamma: float, step: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(i) = lr * gamma ** (i / step) (`ppkt.train.schedule.exponential_factor`)."""
    return lambda_schedule(optimizer, lambda i: exponential_factor(i, gamma, step))


def backbone_export(cfg: PretrainConfig, model: torch.nn.Module, iteration: int, frames: Optional[int] = None,
                    loss: Optional[float] = None) -> dict:
    """The student backbone alone, ready for fine-tuning (no heads, no optimiser); for the frame-level baselines
    its encoder only ("part": "encoder"), the part they train. "pretrain" says what made it: iteration, input
    features, voxel size (metres), the data folders and frame count, the last loss, ppkt's version and commit."""
    name = cfg.loss.name
    state = model.student.state_dict()
    about = {"iteration": iteration, "input_features": cfg.data.features, "color_dropout": cfg.augment.color_dropout,
             "voxel_size": cfg.data.voxel_size,
             "data_roots": list(cfg.data.roots), "frames": frames, "loss": loss, **stamp()}
    if name != "ppnce":  # (PPKT's exports say nothing more, as before the baselines existed)
        about.update(method=name, part="encoder" if name in FRAME_LEVEL else "whole")
    if name in FRAME_LEVEL:
        state = {k: v for k, v in state.items() if k.startswith(ENCODER)}
    if name != "pointcontrast":
        about.update(teacher=cfg.teacher.arch, teacher_weights=cfg.teacher.weights)
    return {"format": BACKBONE_FORMAT, "arch": cfg.student.arch, "in_channels": in_channels(cfg.data.features),
            "channels": list(model.student.channels), "state_dict": state, "pretrain": about}


def pretrain(cfg: PretrainConfig, resume: bool = False, stop_after: Optional[int] = None, overwrite: bool = False) -> Path:
    """Run (or resume) pretraining; returns the output folder. `stop_after` ends early (for tests).

    Checked before any work and before any folder is created: the config (`validate_pretrain`), the output folder
    (a new run never replaces an old one unless `overwrite`), and on `resume` the config against the checkpoint's
    (only `PRETRAIN_SAFE_KEYS` may change). SIGINT / SIGTERM stop after the current iteration, which is saved.
    """
    validate_pretrain(cfg)
    out = Path(cfg.train.out_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    start_run(out, ckpt_path, resume, overwrite, "pretrain")
    with StopRequest() as stop_request, training_process(cfg.train.device, cfg.train.threads) as (d, device):
        return _pretrain(cfg, d, device, resume, stop_after, stop_request)


def _pretrain(cfg: PretrainConfig, d: Dist, device: torch.device, resume: bool, stop_after: Optional[int],
              stop_request: StopRequest) -> Path:
    out = Path(cfg.train.out_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt_path, PRETRAIN_FORMAT) if resume else None
    if state is not None:
        check_resume(state["config"], cfg, PRETRAIN_SAFE_KEYS, ckpt_path)
    cache = TeacherCache(cfg.teacher.cache) if cfg.teacher.cache else None  # precomputed teacher features
    dataset, collate = build_dataset(cfg, cache)  # first: a wrong data path is the most common error
    torch.manual_seed(cfg.train.seed)  # initial weights
    model = build_model(cfg).to(device)
    model.student = sync_batchnorm(model.student, cfg.train.sync_bn, d)  # before DDP and the optimiser
    if cache is not None:
        cache.check_teacher(model.teacher)  # made by these very teacher weights
    params = [p for p in trainable(model).parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    scheduler = exponential_schedule(optimizer, cfg.optim.lr_gamma, cfg.optim.lr_step)
    amp, scaler = mixed_precision(cfg.train.amp, cfg.train.amp_dtype, device)
    start = 0
    if state is not None:
        load_state_strict(trainable(model), state["model"], ckpt_path, "model")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])  # mixed precision: the loss scale continues too
        start = int(state["iteration"])
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        if state is None:
            (out / "config.yaml").write_text(config_to_yaml(cfg))  # a resume never rewrites it

    last_loss: list = [None]  # the loss of the last iteration, for the files' metadata

    def save(done: int) -> None:
        if d.main:
            save_atomic({"format": PRETRAIN_FORMAT, "version": 1, "iteration": done, "config": config_to_dict(cfg),
                         "model": trainable(model).state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "ppkt": stamp(),
                         "loss": last_loss[0]}, ckpt_path)
            save_atomic(backbone_export(cfg, model, done, len(dataset), last_loss[0]), out / "backbone.pth")
        d.barrier()

    stop = cfg.train.iterations if stop_after is None else min(cfg.train.iterations, stop_after)
    sampler = IterationBatchSampler(len(dataset), cfg.train.batch_size, cfg.train.seed, start, stop, d.rank, d.world_size)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.train.workers,
                        worker_init_fn=one_thread_worker, pin_memory=device.type == "cuda", persistent_workers=False)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if d.world_size > 1 else model
    log = MetricsLog(out, start) if d.main else None
    bad_frames: Set[str] = set()  # unusable frames this process replaced (each counted once)
    if start:
        stop_request.already_saved = f"the checkpoint of iteration {start} ({ckpt_path})"
    t_last, frames_since, timer = time.perf_counter(), 0, IterationTimer()
    model.train()
    with Progress(cfg.train.iterations, "pretrain", initial=start, enabled=d.main) as progress:
        for it, batch in zip(range(start, stop), loader):
            timer.batch_ready()
            for frame, reason in batch.skipped:
                if frame not in bad_frames:
                    bad_frames.add(frame)
                    progress.write(f"warning: unusable frame replaced by the next usable one: {frame}: {reason}")
            with amp:
                loss = net(batch.to(device), torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + it))
            optimizer_step(loss, optimizer, scheduler, it, "lower optim.lr or check the input frames", scaler)
            last_loss[0] = float(loss.detach())
            timer.step_done()
            frames_since += batch.batch_size * d.world_size
            done = it + 1
            progress.update(1)
            if done % cfg.train.log_every == 0 or done == stop or it == start:
                skipped = count_distinct(bad_frames, d)  # every process takes part
                if d.main:
                    now = time.perf_counter()
                    fps = frames_since / max(now - t_last, 1e-9)
                    t_last, frames_since = now, 0
                    values = {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"], "frames_per_s": fps,
                              "skipped_frames": skipped, **timer.report()}
                    log.log(done, values)
                    progress.report(done, loss=values["loss"], lr=values["lr"], fps=fps)
            saved_now = done % cfg.train.checkpoint_every == 0 or done == stop
            if saved_now:
                save(done)
            stop_request.after_iteration(done, stop, cfg.train.iterations, saved_now, save, ckpt_path,
                                         f"ppkt pretrain --config {out / 'config.yaml'} --resume", device,
                                         log.close if d.main else lambda: None)
            timer.iteration_done()
    skipped = count_distinct(bad_frames, d)
    if d.main:
        log.close()
        pixels = cfg.loss.n_sub * (d.world_size if cfg.loss.gather_negatives else 1)  # candidates of each point
        contrastive = cfg.loss.name in ("ppnce", "pointcontrast")  # chance: log(candidates) of an uninformed model
        plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png", title=f"pretraining ({cfg.loss.name})",
                        chance=math.log(pixels) if contrastive else None, ylabel=f"{cfg.loss.name} loss")
        if skipped:
            print(f"replaced {skipped} unusable frame(s) by usable ones; see the warnings above", file=sys.stderr)
        print(f"checkpoint: {ckpt_path}\nbackbone for fine-tuning: {out / 'backbone.pth'}\nmetrics: {out / 'metrics.jsonl'}  curve: {out / 'loss_curve.png'}")
    return out


def count_distinct(frames: Set[str], d: Dist) -> int:
    """Number of distinct frames in the union of every process's set (a collective: all processes call it)."""
    if d.world_size == 1:
        return len(frames)
    gathered: List[Optional[Set[str]]] = [None] * d.world_size
    torch.distributed.all_gather_object(gathered, frames)
    return len(set().union(*gathered))
