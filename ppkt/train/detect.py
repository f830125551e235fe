"""`ppkt finetune --task detection`: VoteNet on the SR-UNet, from scratch or from a PPKT backbone (paper 4.3).

The classes' mean box sizes (VoteNet's size clusters) come from the training scenes' boxes and are saved in the
model. data.label_fraction keeps a seeded share of the training scenes. Every random choice derives from
(train.seed, iteration), so a run resumed from checkpoints/last.pt ends with the same weights. Outputs in
train.out_dir: config.yaml, train_scenes.txt, metrics.jsonl, loss_curve.png, checkpoints/last.pt and best.pt (format
"ppkt-detection"; best = highest val mAP@0.25 so far) and eval/ (ppkt.detection.evaluate: metrics.json,
predictions/, ply/).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ppkt.atomic import atomic_path
from ppkt.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_atomic
from ppkt.config import config_to_dict, config_to_yaml
from ppkt.data.scenes import list_scenes, select_scenes
from ppkt.detection.coder import mean_sizes
from ppkt.detection.dataset import DetScenes, collate_detection
from ppkt.detection.evaluate import evaluate_detector, format_ap_table
from ppkt.detection.loss import votenet_loss
from ppkt.detection.votenet import VoteNet
from ppkt.models.segmentor import load_backbone
from ppkt.models.sparse_unet import set_bn_momentum
from ppkt.progress import Progress
from ppkt.provenance import stamp
from ppkt.train.detect_config import DetectionConfig, validate_detection
from ppkt.train.distributed import Dist, training_process
from ppkt.train.interrupt import StopRequest
from ppkt.train.logging import IterationTimer, MetricsLog, plot_loss_curve
from ppkt.train.run_dir import FINETUNE_SAFE_KEYS, check_resume, start_run
from ppkt.train.sampler import IterationBatchSampler, one_thread_worker
from ppkt.train.schedule import lambda_schedule, warmup_decay_factor
from ppkt.train.step import optimizer_step

DETECTION_FORMAT = "ppkt-detection"


def build_detector(cfg: DetectionConfig, num_classes: int, mean_size) -> VoteNet:
    m = cfg.model
    from ppkt.data.features import in_channels

    model = VoteNet(m.arch, num_classes, torch.as_tensor(mean_size), m.channels, in_channels(cfg.data.features),
                    m.num_heading_bins, m.num_seeds, m.num_proposals, m.radius, m.nsample)
    return set_bn_momentum(model, m.bn_momentum)


def finetune_detection(cfg: DetectionConfig, resume: bool = False, stop_after: Optional[int] = None,
                       overwrite: bool = False) -> Path:
    """Run (or resume) detection fine-tuning; returns the output folder. `stop_after` ends early (for tests)."""
    validate_detection(cfg)
    out = Path(cfg.train.out_dir)
    start_run(out, out / "checkpoints" / "last.pt", resume, overwrite, "finetune --task detection")
    with StopRequest() as stop_request, training_process(cfg.train.device, cfg.train.threads) as (d, device):
        return _train(cfg, d, device, resume, stop_after, stop_request)


def _train(cfg: DetectionConfig, d: Dist, device: torch.device, resume: bool, stop_after: Optional[int],
           stop_request) -> Path:
    """Under torchrun every process trains on its share of each batch (DistributedDataParallel); the first one logs,
    validates and saves."""
    say = print if d.main else (lambda *a, **k: None)
    out = Path(cfg.train.out_dir)
    ckpt_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    state = load_checkpoint(ckpt_path, DETECTION_FORMAT) if resume else None
    if state is not None:
        check_resume(state["config"], cfg, FINETUNE_SAFE_KEYS, ckpt_path)
    all_train = list_scenes(cfg.data.root, cfg.data.train_split)
    train_scenes = all_train if cfg.data.label_fraction >= 1 else select_scenes(all_train, cfg.data.label_fraction, cfg.train.seed)
    names = [p.name for p in train_scenes]
    train_set = DetScenes(train_scenes, cfg.data.classes, cfg.data.voxel_size, train=True, augment=cfg.data.augment,
                          max_voxels=cfg.data.max_voxels, seed=cfg.train.seed, rotation=cfg.data.rotation,
                          scale=cfg.data.scale, flip_y=cfg.data.flip_y, features=cfg.data.features,
                          color_dropout=cfg.data.color_dropout)
    classes = train_set.classes
    val_set = (DetScenes(list_scenes(cfg.data.root, cfg.data.val_split), classes, cfg.data.voxel_size, train=False,
                         features=cfg.data.features)
               if cfg.data.val_split else None)
    if state is not None and state["train_scenes"] != names:
        raise CheckpointError(f"{ckpt_path}: trained on other scenes than data.root / label_fraction / seed select now")
    size = mean_sizes(train_set.truth, classes.num_classes)

    torch.manual_seed(cfg.train.seed)
    model = build_detector(cfg, classes.num_classes, size).to(device)
    o = cfg.optim
    params = list(model.parameters())
    opt = (torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay) if o.name == "sgd"
           else torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay))
    sched = lambda_schedule(opt, lambda i: warmup_decay_factor(i, cfg.train.iterations, o.warmup, o.schedule, o.power))
    start, best = 0, {"iteration": 0, "map25": -1.0}
    if state is not None:
        load_state_strict(model, state["model"], ckpt_path, "model")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best = int(state["iteration"]), dict(state["best"])
        say(f"resuming {ckpt_path} at iteration {start}")
    elif cfg.model.pretrained:
        say(load_backbone(model, cfg.model.pretrained, cfg.data.features, cfg.model.adapt_input).summary())
    else:
        say("training from scratch (no model.pretrained / --pretrained given)")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    if state is None and d.main:
        (out / "config.yaml").write_text(config_to_yaml(cfg))
        with atomic_path(out / "train_scenes.txt") as tmp:
            tmp.write_text("".join(n + "\n" for n in names))
    boxes = sum(len(t) for t in train_set.truth)
    say(f"detection: training on {len(names)} of {len(all_train)} scenes ({boxes} boxes), validating on "
        f"{len(val_set) if val_set else 0}; {classes.num_classes} classes ({classes.name})")

    def checkpoint(done: int) -> dict:
        return {"format": DETECTION_FORMAT, "version": 1, "iteration": done, "config": config_to_dict(cfg),
                "classes": {"name": classes.name, "names": list(classes.names), "stored": list(classes.stored)},
                "train_scenes": names, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "best": best, "ppkt": stamp()}

    def evaluate(done: int, out_dir: Optional[Path]) -> Dict:
        s = evaluate_detector(model, val_set, device, cfg.eval, out_dir, cfg.data.val_split, cfg.eval.ply,
                              progress=out_dir is not None)
        log.log(done, {"val_map25": s["mAP@0.25"], "val_map50": s["mAP@0.5"]})
        if s["mAP@0.25"] > best["map25"]:
            best.update(iteration=done, map25=s["mAP@0.25"])
            save_atomic({**checkpoint(done), "val": {k: s[k] for k in ("mAP@0.25", "mAP@0.5")}}, best_path)
        return s

    stop = cfg.train.iterations if stop_after is None else min(cfg.train.iterations, stop_after)
    sampler = IterationBatchSampler(len(train_set), cfg.train.batch_size, cfg.train.seed, start, stop, d.rank, d.world_size)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_detection, num_workers=cfg.train.workers,
                        worker_init_fn=one_thread_worker)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if d.world_size > 1 else model
    log = MetricsLog(out, start) if d.main else None

    def save(done: int) -> None:
        if d.main:
            save_atomic(checkpoint(done), ckpt_path)
        d.barrier()

    if start:
        stop_request.already_saved = f"the checkpoint of iteration {start} ({ckpt_path})"
    timer, t_last = IterationTimer(), time.perf_counter()
    model.train()
    with Progress(cfg.train.iterations, "detection", initial=start, enabled=d.main) as progress:
        for it, batch in zip(range(start, stop), loader):
            timer.batch_ready()
            batch = batch.to(device)
            terms = votenet_loss(net(batch.feats, batch.coords, batch.xyz, batch.offsets), batch.boxes,
                                 model.mean_size, model.num_heading_bins)
            loss = terms["loss"]
            lr = optimizer_step(loss, opt, sched, it, "lower optim.lr")[0]
            timer.step_done()
            progress.update(1)
            done = it + 1
            if d.main and (done % cfg.train.log_every == 0 or done == stop or it == start):
                now = time.perf_counter()
                log.log(done, {**{k: float(v.detach()) for k, v in terms.items()}, "lr": lr, "s_per_it": (now - t_last), **timer.report()})
                t_last = now
                progress.report(done, loss=loss.item(), lr=lr)
            if val_set is not None and cfg.train.eval_every and done % cfg.train.eval_every == 0 and done < cfg.train.iterations:
                if d.main:
                    s = evaluate(done, None)
                    progress.write(f"iteration {done}: {cfg.data.val_split} mAP@0.25 {100 * s['mAP@0.25']:.2f}  "
                                   f"mAP@0.5 {100 * s['mAP@0.5']:.2f}")
                d.barrier()
            saved_now = done % cfg.train.checkpoint_every == 0 or done == stop
            if saved_now:
                save(done)
            stop_request.after_iteration(done, stop, cfg.train.iterations, saved_now, save, ckpt_path,
                                         f"ppkt finetune --task detection --config {out / 'config.yaml'} --resume",
                                         device, log.close if d.main else lambda: None)
            timer.iteration_done()
    if d.main:
        if stop == cfg.train.iterations and val_set is not None:
            s = evaluate(stop, out / "eval")
            save_atomic(checkpoint(stop), ckpt_path)
            print(format_ap_table(s))
        log.close()
        plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png", title="fine-tuning (3D detection, VoteNet)",
                        ylabel="VoteNet loss", smooth=True)
        print(f"checkpoint: {ckpt_path}\nmetrics: {out / 'metrics.jsonl'}"
              + (f"\nevaluation: {out / 'eval'}" if (out / "eval").is_dir() else ""))
    d.barrier()
    return out


def load_detector(path: str | Path, device="cpu"):
    """(VoteNet in eval mode, DetectionClasses, DetectionConfig, state) from a ppkt-detection checkpoint."""
    from omegaconf import OmegaConf

    from ppkt.detection.classes import DetectionClasses

    state = load_checkpoint(path, DETECTION_FORMAT)
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DetectionConfig), state["config"]))
    c = state["classes"]
    classes = DetectionClasses(c["name"], tuple(c["names"]), tuple(c["stored"]))
    model = build_detector(cfg, classes.num_classes, state["model"]["mean_size"])
    load_state_strict(model, state["model"], path, "model")
    return model.to(device).eval(), classes, cfg, state


def evaluate_detection_checkpoint(checkpoint: str | Path, data: Optional[str | Path] = None, split: str = "val",
                                  out: Optional[str | Path] = None, device: str = "auto", ply: bool = True) -> Dict[str, Any]:
    """Run a `ppkt finetune --task detection` checkpoint on `split` of `data` (default: its training root)."""
    from ppkt.data.scenes import list_scenes
    from ppkt.detection.dataset import DetScenes
    from ppkt.detection.evaluate import evaluate_detector
    from ppkt.atomic import write_json
    from ppkt.device import flush_denormals, pick_device
    from ppkt.train.evaluate import default_eval_dir

    dev = pick_device(device, what="--device")
    model, classes, cfg, state = load_detector(checkpoint, dev)
    dataset = DetScenes(list_scenes(data if data is not None else cfg.data.root, split), classes, cfg.data.voxel_size,
                        train=False, features=cfg.data.features)
    out = Path(out) if out is not None else default_eval_dir(checkpoint, split)
    with flush_denormals(dev):
        result = evaluate_detector(model, dataset, dev, cfg.eval, out, split, ply)
    result.update(checkpoint=str(checkpoint), iteration=int(state["iteration"]), out_dir=str(out))
    write_json(out / "metrics.json", result)
    return result
