"""Defaults of the 2D segmentation teacher (no torch import here, so `ppkt teacher --help` can show them).

Architectures of `ppkt.models.seg_teacher.SegTeacher`; training-crop size and scale range of
`ppkt.data.labels2d.SegFrames`; iterations, batch size and learning rate of `ppkt.train.teacher2d.train_teacher2d`
(its docstring says why these values).
"""
from __future__ import annotations

from typing import Tuple

SEG_ARCHS: Tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0")
DEFAULT_IMAGE_SIZE = (240, 320)
DEFAULT_SCALE_RANGE = (0.75, 1.5)
DEFAULT_ITERATIONS = 800
DEFAULT_BATCH_SIZE = 8
DEFAULT_LR = 1e-3
