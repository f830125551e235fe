"""Typed configuration of a fine-tuning run (semantic segmentation); loaded with `ppkt.config.load_config(...,
schema=FinetuneConfig)`, so unknown keys and wrongly typed values are errors that name the key."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from ppkt.config import Checks, check_student, check_train


@dataclass
class FinetuneDataConfig:
    root: str = ""  # dataset folder (scenes + splits), see ppkt.data.scenes
    classes: str = "scannet20"  # class-set name (scannet20, s3dis13) or path to a classes.json
    train_split: str = "train"
    val_split: str = "val"  # "" = no validation and no final evaluation
    voxel_size: float = 0.02  # metres
    max_voxels: Optional[int] = None  # training crop per scene (voxels); None = whole scenes
    label_fraction: float = 1.0  # share of the training scenes used (data-efficient setting), in (0, 1]
    stratified: bool = False  # label_fraction < 1: choose the scenes so that every class present is kept (greedy cover)
    limited_points: Optional[int] = None  # labelled points kept per training scene; None = all
    # the ScanNet data-efficient benchmark's own files (ppkt.data.few_labels; docs/data_efficient.md): a Limited
    # Reconstructions list of training scenes, and a Limited Annotations file of labelled point indices per scene
    scenes_file: Optional[str] = None
    points_file: Optional[str] = None
    # what the network reads per voxel (ppkt.data.features): color | color+normal | normal | none (geometry only)
    features: str = "color"
    color_dropout: float = 0.0  # training: the probability that a sample's colour is replaced by a constant
    augment: bool = True  # training augmentation (rotation, scaling, flips, ... as SegScenes does)
    val_area: int = 5  # S3DIS layout only: the area held out for val / test (the others train)


@dataclass
class FinetuneModelConfig:
    arch: str = "SR-UNet34"  # SR-UNet14 | SR-UNet18 | SR-UNet34
    channels: Optional[List[int]] = None  # None = (32, 64, 128, 256, 256, 128, 96, 96)
    pretrained: Optional[str] = None  # ppkt-backbone export to start from (also --pretrained); None = scratch
    freeze_backbone: bool = False  # linear probe: only the head trains; backbone weights fixed, its BN statistics adapt
    # a backbone pretrained on other input features: adapt its first layer (the channels both read keep their weights,
    # new ones start at zero) instead of refusing it
    adapt_input: bool = False
    # running-statistics momentum of every batch norm. The SR-UNet pretrains at 0.01, whose statistics follow the weights
    # ~100 iterations late: in a 240-iteration run they still held 9 % of their start, which cost scratch 2-9 mIoU
    # points in the transfer benchmark (docs/transfer_history.md); 0.1 is torch's default and MinkowskiEngine's
    bn_momentum: float = 0.1


@dataclass
class FinetuneOptimConfig:
    name: str = "sgd"  # "sgd" | "adamw"
    lr: float = 0.1  # backbone learning rate (peak, after warmup)
    head_lr: Optional[float] = None  # classifier learning rate; None = lr
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    schedule: str = "poly"  # "poly": lr * (1 - t)^power | "cosine": lr * (1 + cos(pi t)) / 2, t = progress after warmup
    power: float = 0.9  # exponent of the poly schedule
    warmup: int = 0  # iterations of linear warmup from lr / warmup


@dataclass
class FinetuneTrainConfig:
    iterations: int = 30000
    batch_size: int = 8  # scenes per iteration, over all processes
    workers: int = 4
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    threads: int = 0  # torch CPU threads, 0 = torch's default
    log_every: int = 10
    checkpoint_every: int = 1000
    eval_every: int = 2000  # validation mIoU every k iterations; 0 = only the final evaluation
    eval_ply: bool = True  # the final evaluation also writes per-scene prediction / ground-truth PLYs
    out_dir: str = "runs/finetune"


@dataclass
class FinetuneConfig:
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)


def validate_finetune(cfg: FinetuneConfig) -> FinetuneConfig:
    """Every check that needs no data and no model; ConfigError lists all problems as `key: problem`."""
    c, d, o = Checks(), cfg.data, cfg.optim
    c.need(d.root.strip() != "", "data.root", "is empty; set it to the dataset folder")
    c.need(d.classes.strip() != "", "data.classes", "is empty; use scannet20, s3dis13 or a classes.json")
    c.voxel(d.voxel_size)
    c.need(d.max_voxels is None or d.max_voxels >= 1, "data.max_voxels", f"must be null or >= 1, got {d.max_voxels}")
    c.need(0 < d.label_fraction <= 1, "data.label_fraction", f"must be in (0, 1], got {d.label_fraction}")
    from ppkt.data.features import FEATURES

    c.choice(d.features, tuple(FEATURES), "data.features")
    c.need(0 <= d.color_dropout <= 1, "data.color_dropout", f"must be in [0, 1], got {d.color_dropout}")
    c.need(isinstance(d.stratified, bool), "data.stratified", f"must be true or false, got {d.stratified!r}")
    c.need(d.limited_points is None or d.limited_points >= 1, "data.limited_points",
           f"must be null (all labels) or >= 1 labelled points per scene, got {d.limited_points}")
    c.need(not (d.scenes_file and d.label_fraction < 1), "data.scenes_file",
           "lists the training scenes; it cannot be combined with data.label_fraction < 1")
    c.need(not (d.points_file and d.limited_points is not None), "data.points_file",
           "lists the labelled points; it cannot be combined with data.limited_points")
    c.at_least(d.val_area, 1, "data.val_area")
    check_student(cfg.model.arch, cfg.model.channels, c, "model")
    frozen = cfg.model.freeze_backbone
    c.need(isinstance(frozen, bool), "model.freeze_backbone", f"must be true or false, got {frozen!r}")
    c.need(not (frozen is True and o.head_lr == 0), "model.freeze_backbone",
           "freezes the backbone and optim.head_lr is 0: nothing would train; set optim.head_lr > 0 (or null = optim.lr)")
    c.choice(o.name, ("sgd", "adamw"), "optim.name")
    c.need(0 < cfg.model.bn_momentum <= 1, "model.bn_momentum", f"must be in (0, 1], got {cfg.model.bn_momentum}")
    c.positive(o.lr, "optim.lr")
    c.need(o.head_lr is None or o.head_lr >= 0, "optim.head_lr", f"must be null or >= 0, got {o.head_lr}")
    c.need(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    c.need(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    c.choice(o.schedule, ("poly", "cosine"), "optim.schedule")
    c.positive(o.power, "optim.power")
    c.at_least(o.warmup, 0, "optim.warmup")
    check_train(cfg.train, c)
    c.at_least(cfg.train.eval_every, 0, "train.eval_every")
    c.done()
    return cfg
