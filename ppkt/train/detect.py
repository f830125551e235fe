"""`ppkt finetune --task detection`: VoteNet on the SR-UNet, from scratch or from a PPKT backbone (paper 4.3).

The classes' mean box sizes (VoteNet's size clusters) come from the training scenes' boxes and are saved in the
model. data.label_fraction keeps a seeded share of the training scenes. Every random choice derives from
(train.seed, iteration), so a run resumed from checkpoints/last.pt ends with the same weights. Outputs in
train.out_dir: config.yaml, train_scenes.txt, metrics.jsonl, loss_curve.png, checkpoints/last.pt and best.pt (format
"ppkt-detection"; best = highest val mAP@0.25 so far) and eval/ (ppkt.detection.evaluate: metrics.json,
predictions/, ply/).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ppkt.checkpoint import load_checkpoint, load_state_strict
from ppkt.data.scenes import list_scenes, select_scenes
from ppkt.detection.coder import mean_sizes
from ppkt.detection.dataset import DetScenes, collate_detection
from ppkt.detection.evaluate import evaluate_detector, format_ap_table
from ppkt.detection.loss import votenet_loss
from ppkt.detection.votenet import VoteNet
from ppkt.models.segmentor import load_backbone
from ppkt.models.sparse_unet import set_bn_momentum
from ppkt.train.detect_config import DetectionConfig, validate_detection
from ppkt.train.distributed import Dist
from ppkt.train.run import RunFiles, Task, train
from ppkt.train.run_dir import FINETUNE_SAFE_KEYS
from ppkt.train.schedule import lambda_schedule, warmup_decay_factor

DETECTION_FORMAT = "ppkt-detection"


def build_detector(cfg: DetectionConfig, num_classes: int, mean_size) -> VoteNet:
    m = cfg.model
    from ppkt.data.features import in_channels

    model = VoteNet(m.arch, num_classes, torch.as_tensor(mean_size), m.channels, in_channels(cfg.data.features),
                    m.num_heading_bins, m.num_seeds, m.num_proposals, m.radius, m.nsample)
    return set_bn_momentum(model, m.bn_momentum)


class Detection(Task):
    """3D detection: VoteNet on the SR-UNet, VoteNet's loss, mAP@0.25 / @0.5 on the val split."""

    command, format, safe_keys = "finetune --task detection", DETECTION_FORMAT, FINETUNE_SAFE_KEYS
    title, curve_title, ylabel = "detection", "fine-tuning (3D detection, VoteNet)", "VoteNet loss"
    rate, score, score_name = "scenes_per_s", "map25", "mAP@0.25"

    def validate(self) -> None:
        validate_detection(self.cfg)

    def build(self, d: Dist, device: torch.device, resumed: bool) -> None:
        cfg = self.cfg
        self.device = device
        all_train = list_scenes(cfg.data.root, cfg.data.train_split)
        train_scenes = all_train if cfg.data.label_fraction >= 1 else select_scenes(all_train, cfg.data.label_fraction,
                                                                                     cfg.train.seed)
        self.train_scenes = [p.name for p in train_scenes]
        self.dataset = DetScenes(train_scenes, cfg.data.classes, cfg.data.voxel_size, train=True,
                                 augment=cfg.data.augment, max_voxels=cfg.data.max_voxels, seed=cfg.train.seed,
                                 rotation=cfg.data.rotation, scale=cfg.data.scale, flip_y=cfg.data.flip_y,
                                 features=cfg.data.features, color_dropout=cfg.data.color_dropout)
        self.collate = collate_detection
        self.classes = classes = self.dataset.classes
        self.val = (DetScenes(list_scenes(cfg.data.root, cfg.data.val_split), classes, cfg.data.voxel_size,
                              train=False, features=cfg.data.features) if cfg.data.val_split else None)
        size = mean_sizes(self.dataset.truth, classes.num_classes)
        torch.manual_seed(cfg.train.seed)
        self.model = model = build_detector(cfg, classes.num_classes, size).to(device)
        o = cfg.optim
        params = list(model.parameters())
        self.optimizer = (torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
                          if o.name == "sgd" else torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay))
        self.scheduler = lambda_schedule(self.optimizer, lambda i: warmup_decay_factor(i, cfg.train.iterations, o.warmup,
                                                                                      o.schedule, o.power))
        if not resumed:
            self.say(load_backbone(model, cfg.model.pretrained, cfg.data.features, cfg.model.adapt_input).summary()
                     if cfg.model.pretrained else "training from scratch (no model.pretrained / --pretrained given)")
        boxes = sum(len(t) for t in self.dataset.truth)
        self.say(f"detection: training on {len(train_scenes)} of {len(all_train)} scenes ({boxes} boxes), validating "
                 f"on {len(self.val) if self.val else 0}; {classes.num_classes} classes ({classes.name})")

    def loss(self, net, batch, it, device):
        batch = batch.to(device)
        self.terms = votenet_loss(net(batch.feats, batch.coords, batch.xyz, batch.offsets), batch.boxes,
                                  self.model.mean_size, self.model.num_heading_bins)
        return self.terms["loss"]

    def count(self, batch) -> int:
        return len(batch.offsets) - 1

    def log_values(self, loss, lrs, d):
        return {**{k: float(v.detach()) for k, v in self.terms.items()}, "lr": next(iter(lrs.values()))}

    def evaluate(self, out_dir):
        cfg = self.cfg
        s = evaluate_detector(self.model, self.val, self.device, cfg.eval, out_dir, cfg.data.val_split, cfg.eval.ply,
                              progress=out_dir is not None)
        return {**s, "map25": s["mAP@0.25"]}

    def val_values(self, s):
        return {"val_map25": s["mAP@0.25"], "val_map50": s["mAP@0.5"]}

    def best_values(self, s):
        return {k: s[k] for k in ("mAP@0.25", "mAP@0.5")}

    def val_line(self, s):
        return f"{self.cfg.data.val_split} mAP@0.25 {100 * s['mAP@0.25']:.2f}  mAP@0.5 {100 * s['mAP@0.5']:.2f}"

    def table(self, s):
        return format_ap_table(s)

    def fields(self):
        c = self.classes
        return {"classes": {"name": c.name, "names": list(c.names), "stored": list(c.stored)}}


def finetune_detection(cfg: DetectionConfig, resume: bool = False, stop_after: Optional[int] = None,
                       overwrite: bool = False) -> Path:
    """Run (or resume) detection fine-tuning (`ppkt.train.run.train`); returns the output folder. `stop_after` ends
    early (for tests)."""
    return train(Detection(cfg, RunFiles.in_folder(cfg.train.out_dir)), resume, stop_after, overwrite)


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
