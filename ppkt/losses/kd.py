"""Knowledge distillation by KL divergence to a teacher's softened class distribution (Hinton et al., 2015)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Mean over rows of T^2 KL(p_teacher || p_student), p = softmax(logits / T): logits (n, C) -> scalar.

        L = (T^2 / n) sum_i sum_c p_t[i, c] (log p_t[i, c] - log p_s[i, c])

    The T^2 factor keeps the gradient scale independent of T. The teacher side is detached. Computed in float32
    (float64 for float64 inputs) with autocast off.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(f"kd_loss: student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
                         "logits must both be (n, C)")
    if not temperature > 0:
        raise ValueError(f"kd_loss: temperature must be > 0, got {temperature}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)
        log_t = F.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=1)
        return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * temperature ** 2
