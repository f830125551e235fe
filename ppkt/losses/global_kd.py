"""Global knowledge distillation (the paper's Table 1 baseline, Hinton KD): the student's encoder, globally pooled per
sample and put through a linear classifier, learns the teacher's image-level class distribution.

    g_b = mean over the voxels v of sample b of e_v        (e: encoder features, (V, C))
    L = (T^2 / B) sum_b KL( softmax(t_b / T) || softmax((W g_b + c) / T) ),   T = 4 by default

t_b: the teacher's image logits (the ImageNet classes of EfficientNet-Lite0). Only the encoder is pretrained.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ppkt.losses.kd import kd_loss


def pool_per_sample(features: Tensor, batch_index: Tensor, batch_size: int) -> Tensor:
    """Mean of the rows of features (V, C) per sample, batch_index (V,) in [0, batch_size) -> (batch_size, C)."""
    sums = features.new_zeros((batch_size, features.shape[1])).index_add_(0, batch_index, features)
    counts = torch.bincount(batch_index, minlength=batch_size).clamp_min(1).to(features.dtype)
    return sums / counts[:, None]


class GlobalClassifier(nn.Module):
    """Global average pooling per sample + a linear classifier: (V, C) encoder features -> (B, classes) logits."""

    def __init__(self, in_channels: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(in_channels, classes)

    def forward(self, features: Tensor, batch_index: Tensor, batch_size: int) -> Tensor:
        return self.linear(pool_per_sample(features, batch_index, batch_size))


def global_kd_loss(student_logits: Tensor, image_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """student_logits (B, K) from GlobalClassifier, image_logits (B, K) from the 2D teacher -> scalar."""
    return kd_loss(student_logits, image_logits, temperature)
