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

from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ppkt.data.scenes import (ClassSet, SceneError, SegScenes, collate_scenes, get_class_set, list_scenes, scene_classes,
                              select_scenes, select_scenes_stratified)
from ppkt.models.segmentor import Segmentor, load_backbone
from ppkt.models.sparse_unet import set_bn_momentum
from ppkt.train.distributed import Dist
from ppkt.train.evaluate import FINETUNE_FORMAT, class_colors, evaluate_model
from ppkt.train.finetune_config import FinetuneConfig, validate_finetune
from ppkt.train.metrics import format_iou_table
from ppkt.train.run import RunFiles, Task, train
from ppkt.train.run_dir import FINETUNE_SAFE_KEYS
from ppkt.train.schedule import lambda_schedule, warmup_decay_factor


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


class Segmentation(Task):
    """Semantic segmentation: a Segmentor on voxelised scenes, cross-entropy, mIoU on the val split."""

    command, format, safe_keys = "finetune", FINETUNE_FORMAT, FINETUNE_SAFE_KEYS
    title, curve_title, ylabel = "finetune", "fine-tuning (semantic segmentation)", "cross-entropy loss"
    rate, score, score_name, say_best = "voxels_per_s", "miou", "mIoU", True

    def validate(self) -> None:
        validate_finetune(self.cfg)

    def build(self, d: Dist, device: torch.device, resumed: bool) -> None:
        cfg = self.cfg
        self.device = device
        self.classes = classes = get_class_set(cfg.data.classes)
        self.colors = class_colors(classes.num_classes, cfg.data.classes)  # those of a classes.json, else a palette
        all_train = list_scenes(cfg.data.root, cfg.data.train_split, cfg.data.val_area)
        train_scenes, chosen_how = select_training_scenes(cfg, all_train, classes)
        self.train_scenes = names = [p.name for p in train_scenes]
        labelled = None
        if cfg.data.points_file:
            from ppkt.data.few_labels import check_named_scenes, read_points_file

            labelled = read_points_file(cfg.data.points_file)
            check_named_scenes(list(labelled), [p.name for p in all_train], "data.points_file", cfg.data.points_file)
        self.dataset = SegScenes(train_scenes, classes, cfg.data.voxel_size, train=True, augment=cfg.data.augment,
                                 max_voxels=cfg.data.max_voxels, limited_points=cfg.data.limited_points,
                                 seed=cfg.train.seed, labelled_points=labelled, labelled_points_file=cfg.data.points_file,
                                 features=cfg.data.features, color_dropout=cfg.data.color_dropout)
        self.collate = collate_scenes
        try:
            self.val_scenes = list_scenes(cfg.data.root, cfg.data.val_split, cfg.data.val_area) if cfg.data.val_split else []
        except SceneError as err:
            raise SceneError(f"{err}\n(to train without validation set data.val_split='')") from None
        self.val = SegScenes(self.val_scenes, classes, cfg.data.voxel_size, train=False, augment=False,
                             features=cfg.data.features) if self.val_scenes else None
        torch.manual_seed(cfg.train.seed)  # initial weights
        self.model = build_model(cfg, classes.num_classes, device)
        self.optimizer, self.scheduler = build_optimizer(cfg, self.model)
        if not resumed:
            self.say(load_backbone(self.model, cfg.model.pretrained, cfg.data.features, cfg.model.adapt_input).summary()
                     if cfg.model.pretrained else "training from scratch (no model.pretrained / --pretrained given)")
        self.say(f"training on {len(names)} of {len(all_train)} scenes ({cfg.data.train_split}; {chosen_how}), "
                 f"validating on {len(self.val_scenes)} ({cfg.data.val_split or 'none'}); {classes.num_classes} classes")
        if cfg.model.freeze_backbone:
            self.say(f"linear probe: backbone frozen (batch-norm statistics adapt), training the head only "
                     f"({sum(p.numel() for p in self.model.head.parameters())} parameters)")

    def loss(self, net, batch, it, device):
        batch = batch.to(device)
        logits = net(batch.feats, batch.coords, batch.batch_size)
        labelled = batch.labels >= 0
        self.last = logits.detach(), batch.labels, labelled
        # a batch without any labelled voxel (possible with limited_points) still steps, with a zero loss
        return F.cross_entropy(logits, batch.labels, ignore_index=-1) if labelled.any() else logits.sum() * 0.0

    def count(self, batch) -> int:
        return batch.coords.shape[0]

    def log_values(self, loss, lrs, d):
        logits, labels, labelled = self.last
        acc = (logits.argmax(1)[labelled] == labels[labelled]).float().mean().item() if labelled.any() else float("nan")
        return {"loss": loss.item(), "lr": lrs.get("backbone", 0.0), "head_lr": lrs["head"], "train_voxel_acc": acc}

    def report(self, values):
        # a linear probe trains its head only: its line shows the head's rate (the frozen backbone's is 0)
        return {"loss": values["loss"], "lr": values["head_lr"] if self.cfg.model.freeze_backbone else values["lr"]}

    def evaluate(self, out_dir):
        cfg = self.cfg
        if out_dir is None:
            return evaluate_model(self.model, self.val, self.classes.names, self.device, workers=cfg.train.workers,
                                  split=cfg.data.val_split, progress=False)
        return evaluate_model(self.model, self.val, self.classes.names, self.device, out_dir=out_dir,
                              scene_dirs=self.val_scenes, ply=cfg.train.eval_ply, workers=cfg.train.workers,
                              split=cfg.data.val_split, colors=self.colors)

    def val_values(self, s):
        return {"val_miou": s["miou"], "val_macc": s["macc"], "val_allacc": s["allacc"]}

    def best_values(self, s):
        return {"miou": s["miou"], "macc": s["macc"], "allacc": s["allacc"]}

    def val_line(self, s):
        return (f"{self.cfg.data.val_split} mIoU {100 * s['miou']:.2f}  mAcc {100 * s['macc']:.2f}  "
                f"allAcc {100 * s['allacc']:.2f}")

    def table(self, s):
        return format_iou_table(s)

    def fields(self):
        return {"classes": classes_to_dict(self.classes), "class_colors": self.colors.tolist()}


def finetune(cfg: FinetuneConfig, resume: bool = False, stop_after: Optional[int] = None, overwrite: bool = False) -> Path:
    """Run (or resume) fine-tuning (`ppkt.train.run.train`); returns the output folder. `stop_after` ends early (for
    tests). Checked before any work and before any folder is created: the config (`validate_finetune`), the output
    folder, and on `resume` the config against the checkpoint's (only `FINETUNE_SAFE_KEYS` may change)."""
    return train(Segmentation(cfg, RunFiles.in_folder(cfg.train.out_dir)), resume, stop_after, overwrite)
