"""`ppkt pretrain`: the PPKT training loop (frozen teacher; student, g2D and g3D learn).

Every random choice is derived from (seed, iteration) or (seed, stream position), so a run stopped at a
checkpoint and resumed ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ppkt.config import PretrainConfig, config_to_dict, config_to_yaml
from ppkt.data.pairs import FramePairs, collate_pairs
from ppkt.models.heads import UPL, Projection3D
from ppkt.models.ppkt import PPKT
from ppkt.models.sparse_unet import build_sparse_unet
from ppkt.models.teacher import build_teacher
from ppkt.checkpoint import BACKBONE_FORMAT, PRETRAIN_FORMAT, CheckpointError, load_checkpoint, load_state_strict, save_atomic
from ppkt.train.distributed import Dist, training_process
from ppkt.train.logging import MetricsLog, plot_loss_curve
from ppkt.train.sampler import IterationBatchSampler, one_thread_worker


def build_model(cfg: PretrainConfig) -> PPKT:
    teacher = build_teacher(cfg.teacher.arch, cfg.teacher.weights, cfg.teacher.stage)
    student = build_sparse_unet(cfg.student.arch, in_channels=3, channels=cfg.student.channels)
    if cfg.loss.projection not in ("upl", "pl"):
        raise ValueError(f"loss.projection must be 'upl' or 'pl', got {cfg.loss.projection!r}")
    g2d = UPL(teacher.out_channels, cfg.loss.embed_dim, upsample=cfg.loss.projection == "upl")
    g3d = Projection3D(student.out_channels, cfg.loss.embed_dim)
    return PPKT(teacher, student, g2d, g3d, cfg.loss.n_sub, cfg.loss.temperature)


def trainable(model: PPKT) -> torch.nn.ModuleDict:
    """The modules PPKT updates (the teacher stays frozen and is rebuilt from the config, never saved)."""
    return torch.nn.ModuleDict({"student": model.student, "g2d": model.g2d, "g3d": model.g3d})


def exponential_schedule(optimizer: torch.optim.Optimizer, gamma: float, step: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(i) = lr * gamma ** (i / step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: gamma ** (i / step))


def backbone_export(cfg: PretrainConfig, model: PPKT, iteration: int) -> dict:
    """The student backbone alone, ready for fine-tuning (no heads, no optimiser)."""
    return {
        "format": BACKBONE_FORMAT,
        "arch": cfg.student.arch,
        "in_channels": 3,
        "channels": list(model.student.channels),
        "state_dict": model.student.state_dict(),
        "pretrain": {"iteration": iteration, "teacher": cfg.teacher.arch, "teacher_weights": cfg.teacher.weights},
    }


def pretrain(cfg: PretrainConfig, resume: bool = False, stop_after: Optional[int] = None) -> Path:
    """Run (or resume) pretraining; returns the output folder. `stop_after` ends early (for tests)."""
    with training_process(cfg.train.device, cfg.train.threads) as (d, device):
        return _pretrain(cfg, d, device, resume, stop_after)


def _pretrain(cfg: PretrainConfig, d: Dist, device: torch.device, resume: bool, stop_after: Optional[int]) -> Path:
    out = Path(cfg.train.out_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    dataset = FramePairs(cfg.data, cfg.augment)  # first: a wrong data path is the most common error
    torch.manual_seed(cfg.train.seed)  # initial weights
    model = build_model(cfg).to(device)
    params = [p for p in trainable(model).parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    scheduler = exponential_schedule(optimizer, cfg.optim.lr_gamma, cfg.optim.lr_step)
    start = 0
    if resume:
        state = load_checkpoint(ckpt_path, PRETRAIN_FORMAT)
        if state["config"]["student"] != config_to_dict(cfg)["student"]:
            raise CheckpointError(f"{ckpt_path}: made for student {state['config']['student']}, config asks {config_to_dict(cfg)['student']}")
        load_state_strict(trainable(model), state["model"], ckpt_path, "model")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["iteration"])
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(config_to_yaml(cfg))

    stop = cfg.train.iterations if stop_after is None else min(cfg.train.iterations, stop_after)
    sampler = IterationBatchSampler(len(dataset), cfg.train.batch_size, cfg.train.seed, start, stop, d.rank, d.world_size)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_pairs, num_workers=cfg.train.workers,
                        worker_init_fn=one_thread_worker, pin_memory=device.type == "cuda", persistent_workers=False)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if d.world_size > 1 else model
    amp = torch.autocast("cuda", dtype=torch.float16, enabled=cfg.train.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp and device.type == "cuda")
    if resume and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])  # mixed precision: the loss scale continues too
    log = MetricsLog(out, start) if d.main else None
    skipped_total = 0
    bar = tqdm(total=cfg.train.iterations, initial=start, desc="pretrain", unit="it", disable=not d.main, dynamic_ncols=True)
    t_last, frames_since = time.perf_counter(), 0
    model.train()
    for it, batch in zip(range(start, stop), loader):
        skipped_total += _report_skips(batch.skipped, bar, d)
        if batch.batch_size > 0:
            with amp:
                loss = net(batch.to(device), torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + it))
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"iteration {it}: loss is {loss.item()}; lower optim.lr or check the input frames")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()
        frames_since += batch.batch_size * d.world_size
        bar.update(1)
        done = it + 1
        if d.main and batch.batch_size > 0 and (done % cfg.train.log_every == 0 or done == stop or it == start):
            now = time.perf_counter()
            fps = frames_since / max(now - t_last, 1e-9)
            t_last, frames_since = now, 0
            values = {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"], "frames_per_s": fps, "skipped_frames": skipped_total}
            log.log(done, values)
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.3g}", fps=f"{fps:.1f}")
        if done % cfg.train.checkpoint_every == 0 or done == stop:
            if d.main:
                save_atomic({"format": PRETRAIN_FORMAT, "version": 1, "iteration": done, "config": config_to_dict(cfg),
                             "model": trainable(model).state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}, ckpt_path)
                save_atomic(backbone_export(cfg, model, done), out / "backbone.pth")
            d.barrier()
    bar.close()
    if d.main:
        log.close()
        plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png", chance=math.log(cfg.loss.n_sub))
        if skipped_total:
            print(f"skipped {skipped_total} frame(s) with bad input; see the warnings above")
        print(f"checkpoint: {ckpt_path}\nbackbone for fine-tuning: {out / 'backbone.pth'}\nmetrics: {out / 'metrics.jsonl'}  curve: {out / 'loss_curve.png'}")
    return out


def _report_skips(skipped, bar: tqdm, d: Dist) -> int:
    """Warn about each skipped frame (main process); returns how many this process skipped."""
    for frame, reason in skipped:
        if d.main:
            bar.write(f"warning: skipped {frame}: {reason}")
    return len(skipped)
