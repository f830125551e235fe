"""Names of the models ppkt builds (no torch import: configs are checked against these before any model is built)."""
from __future__ import annotations

TEACHER_ARCHS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "efficientnet_lite0")
RESNET_STAGES: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
EFFNET_STAGES: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4", "stage5")

# residual blocks per stage (4 encoder, then 4 decoder stages) of the SR-UNets, as in MinkUNet
SR_UNET_LAYERS = {
    "SR-UNet14": (1, 1, 1, 1, 1, 1, 1, 1),
    "SR-UNet18": (2, 2, 2, 2, 2, 2, 2, 2),
    "SR-UNet34": (2, 3, 4, 6, 2, 2, 2, 2),
}
DEFAULT_CHANNELS = (32, 64, 128, 256, 256, 128, 96, 96)

PROJECTIONS: tuple[str, ...] = ("upl", "pl")  # g2D: 1x1 conv + bilinear upsampling, or 1x1 conv only


def teacher_key(arch: str) -> str:
    """A 2D architecture's name as ppkt spells it: lower case, "_" for "-" ("EfficientNet-Lite0" -> "efficientnet_lite0")."""
    return arch.lower().replace("-", "_")


def teacher_stages(arch: str) -> tuple[str, ...]:
    """Stage names a teacher arch can be cut after (the last one is the default)."""
    return EFFNET_STAGES if teacher_key(arch) == "efficientnet_lite0" else RESNET_STAGES
