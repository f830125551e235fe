"""The ResNet-FCN (and EfficientNet-Lite0-FCN) segmentation network (`SegTeacher`, its `FCNHead` decoder) and `load_seg_teacher`.

The checkpoint ``{"format": "ppkt-teacher2d", "version": 1, "arch", "backbone", "head", ...}`` written by
`ppkt.train.teacher2d.train_teacher2d` is read by `build_teacher(arch, weights=<file>)` (backbone only) and by
`load_seg_teacher` (backbone + head).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ppkt.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ppkt.models.catalog import teacher_key
from ppkt.models.teacher import TEACHER_CKPT_FORMAT, build_teacher
from ppkt.checkpoint import CheckpointError, load_checkpoint, load_state_strict
from ppkt.teacher2d_defaults import SEG_ARCHS

__all__ = ["SEG_ARCHS", "SEG_TEACHER_VERSION", "FCNHead", "SegTeacher", "load_seg_teacher"]

SEG_TEACHER_VERSION = 1
_EXPANSION = {"resnet18": 1, "resnet34": 1, "resnet50": 4}
_STAGES = ("layer1", "layer2", "layer3", "layer4")


def _efficientnet_encoder(weights: str):
    """timm EfficientNet-Lite0 returning its stride 8 / 16 / 32 stages (40, 112, 320 channels), with `weights`
    ("none", "imagenet": the package file, or a path) read as `build_teacher` reads them; its (0.5, 0.5) normalisation."""
    import timm

    from ppkt.models.teacher import EFFNET_TIMM_NAME, _effnet_state_dict, _load_checked

    net = timm.create_model(EFFNET_TIMM_NAME, pretrained=False, features_only=True, out_indices=(2, 3, 4))
    sd, desc = _effnet_state_dict(weights)
    if sd is not None:
        _load_checked(net, sd, "efficientnet_lite0", desc)
    return net, (40, 112, 320), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


class FCNHead(nn.Module):
    """FCN / DeepLab-lite decoder: layer2 + up(layer3) + up(layer4) after 1x1 convs, 3x3 conv-BN-ReLU, classifier.

    Works at stride 8 (layer2's resolution); `SegTeacher` upsamples the logits bilinearly to the input size.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, mid_channels: int = 128, dropout: float = 0.1):
        super().__init__()
        c2, c3, c4 = in_channels
        self.lateral2 = nn.Conv2d(c2, mid_channels, 1)
        self.lateral3 = nn.Conv2d(c3, mid_channels, 1)
        self.lateral4 = nn.Conv2d(c4, mid_channels, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)

    def forward(self, f2: Tensor, f3: Tensor, f4: Tensor) -> Tensor:
        size = f2.shape[-2:]
        x = self.lateral2(f2)
        x = x + F.interpolate(self.lateral3(f3), size=size, mode="bilinear", align_corners=False)
        x = x + F.interpolate(self.lateral4(f4), size=size, mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(x))


class SegTeacher(nn.Module):
    """ResNet-FCN (or EfficientNet-Lite0-FCN, the pilot study's network) for semantic segmentation: (B, 3, H, W) RGB
    in [0, 1] -> logits (B, num_classes, H, W).

    Input is normalised inside the model, exactly as `ppkt.models.teacher.Teacher2D` normalises it (ImageNet mean /
    std for ResNets, 0.5 / 0.5 for EfficientNet-Lite0).
    `backbone` is a torchvision ResNet whose `fc` is an Identity: its state dict has exactly torchvision's key
    names without `fc.*`, so it loads into `build_teacher(arch, weights=<checkpoint>)`.
    backbone_weights: "none" (random init), "imagenet" (torch hub cache file, never downloaded) or a checkpoint
    path, read exactly as `build_teacher` reads teacher weights.
    """

    def __init__(self, arch: str = "resnet18", num_classes: int = 2, backbone_weights: str = "none",
                 mid_channels: int = 128):
        super().__init__()
        arch = teacher_key(arch)
        if arch not in SEG_ARCHS:
            raise ValueError(f"Unknown segmentation teacher arch '{arch}'; choose one of {SEG_ARCHS}.")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch, self.num_classes = arch, int(num_classes)
        self.backbone_weights = str(backbone_weights)
        if arch == "efficientnet_lite0":
            self.backbone, channels, mean, std = _efficientnet_encoder(self.backbone_weights)
        else:
            net = getattr(torchvision.models, arch)(weights=None)
            net.fc = nn.Identity()  # no fc.* keys in the state dict
            self.backbone = net
            if self.backbone_weights != "none":
                teacher = build_teacher(arch, self.backbone_weights, stage="layer4")  # same loading (and errors)
                self.backbone.load_state_dict(teacher.body.state_dict())
            e = _EXPANSION[arch]
            channels, mean, std = (128 * e, 256 * e, 512 * e), IMAGENET_MEAN, IMAGENET_STD
        self.head = FCNHead(channels, self.num_classes, mid_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        # Set by load_seg_teacher / train_teacher2d; used by evaluation.
        self.class_names: List[str] = [str(i) for i in range(self.num_classes)]
        self.ignore_index = 255
        self.train_image_size: Optional[Tuple[int, int]] = None

    def normalize(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"SegTeacher expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return (images.to(self.mean.dtype) - self.mean) / self.std

    def encode(self, images: Tensor) -> Dict[str, Tensor]:
        """Backbone features {"layer1": stride 4, ..., "layer4": stride 32} of RGB images in [0, 1]."""
        if self.arch == "efficientnet_lite0":  # its stride-8, 16 and 32 stages in the ResNet stages' places
            return dict(zip(_STAGES[1:], self.backbone(self.normalize(images))))
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(self.normalize(images)))))
        feats = {}
        for name in _STAGES:
            x = getattr(b, name)(x)
            feats[name] = x
        return feats

    def forward(self, images: Tensor) -> Tensor:
        feats = self.encode(images)
        logits = self.head(feats["layer2"], feats["layer3"], feats["layer4"])
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, H, W) int64 class ids (call .eval() first)."""
        return self(images).argmax(1)


def load_seg_teacher(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SegTeacher:
    """Rebuild the segmentation network (backbone + head) of a `ppkt teacher train` checkpoint, in eval mode."""
    path = Path(path)
    state = load_checkpoint(path, TEACHER_CKPT_FORMAT)  # weights_only=True; CheckpointError names the file
    arch, num_classes = state.get("arch"), state.get("num_classes")
    if arch not in SEG_ARCHS:
        raise CheckpointError(f"{path}: a '{TEACHER_CKPT_FORMAT}' file for arch {arch!r}; segmentation teachers are {SEG_ARCHS}")
    if state.get("version") != SEG_TEACHER_VERSION or not isinstance(state.get("head"), Mapping):
        raise CheckpointError(f"{path}: not a version-{SEG_TEACHER_VERSION} segmentation teacher (version "
                              f"{state.get('version')!r}, head {'present' if 'head' in state else 'missing'}); "
                              "it can still serve as a PPKT teacher through build_teacher")
    if not isinstance(num_classes, int) or num_classes < 1 or not isinstance(state.get("backbone"), Mapping):
        raise CheckpointError(f"{path}: bad 'num_classes' ({num_classes!r}) or missing 'backbone'")
    model = SegTeacher(arch, num_classes)
    load_state_strict(model.backbone, state["backbone"], path, f"{arch} backbone (arch of the file)")
    load_state_strict(model.head, state["head"], path, "head")
    model.class_names = list(state.get("class_names") or model.class_names)
    model.ignore_index = int(state.get("ignore_index", 255))
    size = (state.get("train") or {}).get("image_size")
    model.train_image_size = (int(size[0]), int(size[1])) if size else None
    return model.to(map_location).eval()
