"""Typed configuration of a detection fine-tuning run (`ppkt finetune --task detection`); the optimiser and run
sections are those of segmentation fine-tuning (ppkt.train.finetune_config)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from ppkt.config import Checks, check_student, check_train
from ppkt.train.finetune_config import FinetuneOptimConfig, FinetuneTrainConfig


@dataclass
class DetectionDataConfig:
    root: str = ""  # dataset folder: scene folders with coord, color and boxes.npy, and splits/
    classes: str = "scannet18"  # scannet18 | sunrgbd10 | synthetic | a detection_classes.json (or its folder)
    train_split: str = "train"
    val_split: str = "val"  # "" = no validation and no final evaluation
    voxel_size: float = 0.05  # metres
    max_voxels: Optional[int] = None  # training crop per scene (voxels; boxes less than half inside are dropped)
    label_fraction: float = 1.0  # share of the training scenes used (seeded by train.seed), in (0, 1]
    augment: bool = True  # flips, rotation about z, scaling of points and boxes together (training)
    rotation: float = 0.5236  # radians: the rotation about z is uniform in [-rotation, rotation] (30 degrees)
    scale: List[float] = field(default_factory=lambda: [0.85, 1.15])  # uniform isotropic scaling range
    flip_y: bool = True  # also mirror y (x always): off for single views (SUN RGB-D), as VoteNet
    features: str = "color"  # what the network reads per voxel (ppkt.data.features): color | color+normal | normal | none
    color_dropout: float = 0.0  # training: the probability that a scene's colour is replaced by a constant


@dataclass
class DetectionModelConfig:
    arch: str = "SR-UNet34"
    channels: Optional[List[int]] = None
    pretrained: Optional[str] = None  # ppkt-backbone export (also --pretrained); None = scratch
    num_heading_bins: int = 12  # 1 for axis-aligned boxes (ScanNet)
    num_seeds: int = 1024
    num_proposals: int = 256
    radius: float = 0.3  # metres, vote aggregation
    nsample: int = 16  # votes per proposal
    # batch-norm momentum of every layer, the backbone's too (it pretrains at 0.01, whose running statistics lag ~100
    # iterations behind: far from the weights of a short fine-tuning run; VoteNet starts at 0.5 and decays)
    bn_momentum: float = 0.1
    adapt_input: bool = False  # a backbone pretrained on other input features: adapt its first layer (see fine-tuning)


@dataclass
class DetectionEvalConfig:
    min_score: float = 0.05  # proposals of lower objectness probability are dropped before NMS (VoteNet's conf_thresh)
    nms_iou: float = 0.25  # per-class 3D NMS
    axis_aligned: bool = False  # IoU ignoring headings (ScanNet's boxes)
    per_class: bool = True  # every kept box once per class, scored objectness x that class's probability (VoteNet)
    ply: bool = True  # the final evaluation writes predicted and true boxes as PLY meshes


@dataclass
class DetectionConfig:
    data: DetectionDataConfig = field(default_factory=DetectionDataConfig)
    model: DetectionModelConfig = field(default_factory=DetectionModelConfig)
    optim: FinetuneOptimConfig = field(default_factory=lambda: FinetuneOptimConfig(name="adamw", lr=0.001, weight_decay=0.0))
    train: FinetuneTrainConfig = field(default_factory=lambda: FinetuneTrainConfig(out_dir="runs/detection"))
    eval: DetectionEvalConfig = field(default_factory=DetectionEvalConfig)


def validate_detection(cfg: DetectionConfig) -> DetectionConfig:
    """Every check that needs no data; ConfigError lists all problems as `key: problem`."""
    c, d, m, o = Checks(), cfg.data, cfg.model, cfg.optim
    c.need(d.root.strip() != "", "data.root", "is empty; set it to the dataset folder")
    c.voxel(d.voxel_size)
    c.need(d.max_voxels is None or d.max_voxels >= 1, "data.max_voxels", f"must be null or >= 1, got {d.max_voxels}")
    c.need(d.rotation >= 0, "data.rotation", f"must be >= 0 radians, got {d.rotation}")
    c.need(len(d.scale) == 2 and 0 < d.scale[0] <= d.scale[1], "data.scale", f"must be [low, high], 0 < low <= high, got {d.scale}")
    c.need(0 < d.label_fraction <= 1, "data.label_fraction", f"must be in (0, 1], got {d.label_fraction}")
    from ppkt.data.features import FEATURES

    c.choice(d.features, tuple(FEATURES), "data.features")
    c.need(0 <= d.color_dropout <= 1, "data.color_dropout", f"must be in [0, 1], got {d.color_dropout}")
    check_student(m.arch, m.channels, c, "model")
    for key in ("num_heading_bins", "num_seeds", "num_proposals", "nsample"):
        c.at_least(getattr(m, key), 1, f"model.{key}")
    c.need(m.num_proposals <= m.num_seeds, "model.num_proposals", f"must be <= model.num_seeds ({m.num_seeds})")
    c.positive(m.radius, "model.radius")
    c.need(0 < m.bn_momentum <= 1, "model.bn_momentum", f"must be in (0, 1], got {m.bn_momentum}")
    c.need(0 <= cfg.eval.min_score < 1, "eval.min_score", f"must be in [0, 1), got {cfg.eval.min_score}")
    c.need(0 < cfg.eval.nms_iou <= 1, "eval.nms_iou", f"must be in (0, 1], got {cfg.eval.nms_iou}")
    c.choice(o.name, ("sgd", "adamw"), "optim.name")
    c.positive(o.lr, "optim.lr")
    c.choice(o.schedule, ("poly", "cosine"), "optim.schedule")
    c.at_least(o.warmup, 0, "optim.warmup")
    check_train(cfg.train, c)
    c.at_least(cfg.train.eval_every, 0, "train.eval_every")
    c.done()
    return cfg
