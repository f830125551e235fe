"""Typed configuration of a pretraining run: dataclasses, loaded from YAML with `key=value` overrides.

YAML is read with a safe loader (OmegaConf). Unknown keys and values of the wrong type are errors
that name the key, so a typo in a config never silently falls back to a default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ppkt.errors import UserError


class ConfigError(UserError):
    """A config file or override is invalid; the message names the file or key."""


@dataclass
class DataConfig:
    roots: List[str] = field(default_factory=list)  # frame folders, or folders holding many of them
    layout: str = "auto"  # "auto" | "scannet" | "7scenes"
    depth_scale: float = 1000.0  # depth units per metre (1000 for millimetre PNGs)
    max_depth: float = 10.0  # metres; farther depth is treated as invalid
    stride: int = 1  # keep every k-th frame of each folder
    image_size: List[int] = field(default_factory=lambda: [480, 640])  # [H, W] pixels fed to the teacher
    voxel_size: float = 0.025  # metres
    # 3D frame of the points: "camera" (up = -y; any poses or none) or "world" (the pose's frame, which must be
    # z-up, as ScanNet's and the synthetic world's are, and as the fine-tuning scenes are; needs poses)
    frame: str = "camera"


@dataclass
class AugmentConfig:
    flip: float = 0.5  # probability of a horizontal flip (image, depth, intrinsics)
    resize: List[float] = field(default_factory=lambda: [0.8, 1.2])  # random resize factor range
    rotation: float = math.pi  # max |angle| (radians) of the rotation about the up axis
    scale: List[float] = field(default_factory=lambda: [0.9, 1.1])  # random isotropic scaling range
    elastic: List[List[float]] = field(default_factory=lambda: [[0.2, 0.4], [0.8, 1.6]])  # [granularity m, magnitude m]
    enabled: bool = True


@dataclass
class TeacherConfig:
    arch: str = "resnet50"
    weights: str = "imagenet"  # "imagenet" | "none" | path to a checkpoint
    stage: Optional[str] = None  # None = the deepest stage (layer4 for ResNets)


@dataclass
class StudentConfig:
    arch: str = "SR-UNet34"  # SR-UNet14 | SR-UNet18 | SR-UNet34
    channels: Optional[List[int]] = None  # None = (32, 64, 128, 256, 256, 128, 96, 96)


@dataclass
class LossConfig:
    embed_dim: int = 128
    n_sub: int = 4096  # pixel-point pairs sampled across the batch
    temperature: float = 0.04
    projection: str = "upl"  # "upl" (1x1 conv + bilinear upsampling) | "pl" (1x1 conv only)


@dataclass
class OptimConfig:
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_gamma: float = 0.99  # exponential decay: lr * lr_gamma ** (iteration / lr_step)
    lr_step: int = 1000


@dataclass
class TrainConfig:
    iterations: int = 60000
    batch_size: int = 24  # frames per iteration, over all processes
    workers: int = 4
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: bool = False  # mixed precision on CUDA
    threads: int = 0  # torch CPU threads, 0 = torch's default
    log_every: int = 10
    checkpoint_every: int = 1000
    out_dir: str = "runs/pretrain"


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_config(path: str | Path | None, overrides: Sequence[str] = (), schema: type = PretrainConfig) -> Any:
    """Schema defaults <- YAML file <- `a.b=value` overrides; returns a typed `schema` instance."""
    merged = OmegaConf.structured(schema)
    try:
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"{path}: config file not found")
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected key=value, e.g. train.iterations=100")
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path or 'overrides'}: {err}") from None
    return OmegaConf.to_object(merged)


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (for checkpoints and logs)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def config_to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
