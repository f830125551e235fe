"""The paper's pretraining baselines as models (`loss.name`): each takes a `ppkt.data.pairs.PairBatch` and a generator
and returns its scalar loss, like `ppkt.models.ppkt.PPKT`. The losses and their formulas are in `ppkt.losses`.

    ppkd       per point: KL to a 2D segmentation teacher's class distribution at the paired pixel (Table 5)
    global_kd  per frame: the student's pooled encoder + a linear classifier, KL to the image's ImageNet logits (Table 1)
    gupta      per frame: L2 between the pooled 2D features and the pooled 3D encoder features through a linear map
    crd        per frame: contrastive distillation of the pooled 2D and 3D embeddings, with a memory bank

The frame-level methods train the student's encoder only (`ENCODER`); its decoder stays frozen and is not exported.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.losses.crd import CRDLoss
from ppkt.losses.global_kd import GlobalClassifier, global_kd_loss, pool_per_sample
from ppkt.losses.gupta import GuptaMap, gupta_loss
from ppkt.losses.ppkd import ppkd_loss
from ppkt.models.ppkt import teacher_features

ENCODER: Tuple[str, ...] = ("conv_input.", "down.", "enc.")  # the SR-UNet's encoder keys (stem, downsampling, blocks)
FRAME_LEVEL = ("global_kd", "gupta", "crd")  # the methods that pretrain the encoder only


def freeze(module: nn.Module) -> nn.Module:
    """No gradients into `module` (a teacher; its BatchNorm statistics are kept by `eval` in the owner's `train`)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def encoder_only(student: nn.Module) -> nn.Module:
    """Freeze every student parameter outside the encoder (they get no gradient from a pooled encoder loss)."""
    for name, p in student.named_parameters():
        if not name.startswith(ENCODER):
            p.requires_grad_(False)
    return student


def pooled_encoder(student: nn.Module, batch) -> Tensor:
    """(B, channels[3]) mean of each frame's bottleneck features (stride 16 voxels)."""
    x = student.encode(batch.feats, batch.coords, batch.batch_size)
    return pool_per_sample(x.features, x.indices[:, 0].long(), batch.batch_size)


class FrozenTeacherModel(nn.Module):
    """A model whose child `teacher` never leaves eval mode."""

    def train(self, mode: bool = True) -> "FrozenTeacherModel":
        super().train(mode)
        self.teacher.eval()
        return self


class PPKD(FrozenTeacherModel):
    """loss = PPKD(class head(f3D(points)), segmentation teacher's logits at the paired pixels) on n_sub pairs."""

    def __init__(self, teacher: nn.Module, student: nn.Module, num_classes: int, n_sub: int, temperature: float):
        super().__init__()
        self.teacher, self.student = freeze(teacher), student
        self.head = nn.Linear(student.out_channels, num_classes)
        self.n_sub, self.temperature = n_sub, temperature

    def forward(self, batch, generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            logits2d = self.teacher(batch.images).flatten(2)  # (B, C, H * W)
        f3d = self.student(batch.feats, batch.coords, batch.batch_size)
        idx = torch.randperm(f3d.shape[0], generator=generator)[: self.n_sub].to(f3d.device)
        return ppkd_loss(self.head(f3d[idx]), logits2d[batch.voxel_batch[idx], :, batch.pixel[idx]], self.temperature)


class GlobalKD(FrozenTeacherModel):
    """loss = KD(linear(pool(encoder(points))), the teacher's image logits) per frame."""

    def __init__(self, teacher: nn.Module, student: nn.Module, num_classes: int, temperature: float):
        super().__init__()
        self.teacher, self.student = freeze(teacher), encoder_only(student)
        self.classifier = GlobalClassifier(student.channels[3], num_classes)
        self.temperature = temperature

    def forward(self, batch, generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            image_logits = self.teacher(batch.images)
        x = self.student.encode(batch.feats, batch.coords, batch.batch_size)
        logits = self.classifier(x.features, x.indices[:, 0].long(), batch.batch_size)
        return global_kd_loss(logits, image_logits, self.temperature)


class Gupta(FrozenTeacherModel):
    """loss = || A pool(encoder(points)) + c - pool(teacher(image)) ||^2 per frame."""

    def __init__(self, teacher: nn.Module, student: nn.Module):
        super().__init__()
        self.teacher, self.student = freeze(teacher), encoder_only(student)
        self.map = GuptaMap(student.channels[3], teacher.out_channels)

    def forward(self, batch, generator: torch.Generator) -> Tensor:
        pooled2d = teacher_features(self.teacher, batch).float().mean(dim=(2, 3))
        return gupta_loss(self.map(pooled_encoder(self.student, batch)), pooled2d)


class CRD(FrozenTeacherModel):
    """loss = CRD(normalise(g3D(pool(encoder(points)))), normalise(g2D(pool(teacher(image))))) per frame."""

    def __init__(self, teacher: nn.Module, student: nn.Module, embed_dim: int, bank_size: int, temperature: float):
        super().__init__()
        self.teacher, self.student = freeze(teacher), encoder_only(student)
        self.g2d = nn.Linear(teacher.out_channels, embed_dim)
        self.g3d = nn.Linear(student.channels[3], embed_dim)
        self.crd = CRDLoss(embed_dim, bank_size, temperature)

    def forward(self, batch, generator: torch.Generator) -> Tensor:
        pooled2d = teacher_features(self.teacher, batch).float().mean(dim=(2, 3))
        u = F.normalize(self.g3d(pooled_encoder(self.student, batch)), dim=1)
        return self.crd(u, F.normalize(self.g2d(pooled2d), dim=1))
