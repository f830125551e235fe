"""2D segmentation teacher (ppkt.train.teacher2d): training on a tiny rendered-label dataset, the checkpoint as a
PPKT teacher, metrics against hand-computed values, and bad input."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppkt.cli import build_parser, main as cli_main
from ppkt.data.labels2d import SegFrames, Teacher2DDataError
from ppkt.models.seg_teacher import SegTeacher, load_seg_teacher
from ppkt.models.teacher import TeacherWeightsError, build_teacher
from ppkt.checkpoint import CheckpointError, save_atomic
from ppkt.train.logging import read_metrics
from ppkt.train.metrics import confusion_matrix, segmentation_metrics
from ppkt.config import ConfigError
from ppkt.train.teacher2d import evaluate_teacher2d, train_teacher2d

H, W = 48, 64
CLASSES = ["flat", "stripes", "checkers"]


def _frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A flat background (class 0) with a striped (1) and a checkered (2) rectangle; the top row is unlabelled."""
    color = np.empty((H, W, 3), np.uint8)
    color[:] = rng.integers(60, 200, 3)
    label = np.zeros((H, W), np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    for cls in (1, 2):
        h, w = rng.integers(12, 24), rng.integers(14, 28)
        y, x = rng.integers(1, H - h), rng.integers(0, W - w)
        box = (slice(y, y + h), slice(x, x + w))
        pattern = (xx[box] // 3) % 2 if cls == 1 else ((xx[box] // 4) + (yy[box] // 4)) % 2
        color[box] = np.where(pattern[..., None] == 1, 235, 20).astype(np.uint8)
        label[box] = cls
    label[0] = 255
    return color, label


def make_dataset(root: Path, scenes=("scene0", "scene1"), frames: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    K = np.array([[50.0, 0, W / 2, 0], [0, 50.0, H / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    for scene in scenes:
        d = root / "frames" / scene
        for sub in ("color", "depth", "intrinsic", "pose", "label"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        np.savetxt(d / "intrinsic" / "intrinsic_color.txt", K)
        np.savetxt(d / "intrinsic" / "intrinsic_depth.txt", K)
        for i in range(frames):
            color, label = _frame(rng)
            Image.fromarray(color).save(d / "color" / f"{i}.jpg", quality=95)
            Image.fromarray(np.full((H, W), 1500, np.uint16)).save(d / "depth" / f"{i}.png")
            np.savetxt(d / "pose" / f"{i}.txt", np.eye(4))
            Image.fromarray(label).save(d / "label" / f"{i}.png")
    (root / "classes.json").write_text(json.dumps({"names": CLASSES, "ignore_index": 255}))
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits" / "train.txt").write_text("\n".join(scenes) + "\n")
    (root / "splits" / "val.txt").write_text(scenes[-1] + "\n")
    return root


TRAIN = dict(arch="resnet18", iterations=30, batch_size=4, lr=2e-3, image_size=(48, 64), seed=0, workers=0,
             device="cpu", progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("seg") / "data")
    out = root.parent / "run" / "teacher2d.pt"
    return root, out, train_teacher2d(root, out, **TRAIN)


def test_short_training_lowers_the_loss_and_writes_the_checkpoint(trained):
    root, out, result = trained
    losses = [r["loss"] for r in read_metrics(result["metrics_file"]) if "loss" in r]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert losses[0] > 0.7  # about log(3) at random init
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert Path(result["metrics_file"]) == out.with_name("teacher2d.metrics.jsonl")
    assert Path(result["loss_curve"]).stat().st_size > 1000
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert state["format"] == "ppkt-teacher2d" and state["version"] == 1 and state["arch"] == "resnet18"
    assert state["num_classes"] == 3 and state["class_names"] == CLASSES and state["ignore_index"] == 255
    assert state["train"]["iterations"] == 30 and state["train"]["image_size"] == [48, 64]
    assert not any(k.startswith("fc.") for k in state["backbone"])
    val = state["metrics"]["val"]
    assert val["frames"] == 4 and set(val["per_class_iou"]) == set(CLASSES)
    # better than chance: predicting the majority class everywhere (the best input-blind guess) scores
    # allAcc = f_max and mIoU = f_max / 3; measured on val with (dataset, training) seeds (0, 0), (1, 0), (0, 1), (2, 2):
    # mIoU 0.71-0.78, allAcc 0.92-0.93, every class IoU >= 0.49, against f_max 0.77-0.79
    labels = np.concatenate([np.asarray(Image.open(p)).ravel() for p in (root / "frames" / "scene1" / "label").glob("*.png")])
    freq = np.bincount(labels[labels != 255], minlength=3)
    f_max = freq.max() / freq.sum()
    assert val["allacc"] > f_max + 0.07 and val["miou"] > f_max / 3 + 0.3
    assert min(val["per_class_iou"].values()) > 0.3  # every class, not only the background
    from ppkt.commands.info import describe

    text = "\n".join(describe(out))
    assert "ppkt 2D segmentation teacher" in text and "architecture: resnet18" in text and "iterations: 30" in text
    assert f"miou': {val['miou']}" in text and "written by: ppkt" in text
    assert result["val"]["allacc"] == val["allacc"]
    assert not list(out.parent.glob(".*.tmp"))  # written atomically


def test_training_is_deterministic_with_the_seed(trained, tmp_path):
    root, out, _ = trained
    a = train_teacher2d(root, tmp_path / "a.pt", **{**TRAIN, "iterations": 2, "workers": 0}, eval_split=None)
    b = train_teacher2d(root, tmp_path / "b.pt", **{**TRAIN, "iterations": 2, "workers": 1}, eval_split=None)
    assert [r.get("loss") for r in read_metrics(a["metrics_file"])] == [r.get("loss") for r in read_metrics(b["metrics_file"])]
    sa, sb = (torch.load(p, weights_only=True) for p in (a["checkpoint"], b["checkpoint"]))
    for k, v in sa["backbone"].items():
        assert torch.equal(v, sb["backbone"][k]), k


def test_a_stopped_teacher_run_resumes_to_the_same_weights_and_an_old_run_is_not_replaced(trained, tmp_path):
    root, _, _ = trained
    args = {**TRAIN, "iterations": 4, "checkpoint_every": 100, "eval_split": None}
    whole = train_teacher2d(root, tmp_path / "whole.pt", **args)
    part = tmp_path / "part.pt"
    train_teacher2d(root, part, **args, stop_after=2)
    assert not part.exists() and (tmp_path / "part.last.pt").is_file()  # no finished-looking file from a partial run
    from ppkt.commands.info import describe

    assert "iteration: 2 of 4" in "\n".join(describe(tmp_path / "part.last.pt"))
    with pytest.raises(ConfigError, match="already holds a run"):
        train_teacher2d(root, part, **args)
    with pytest.raises(ConfigError, match="lr: 0.002 -> 0.001"):
        train_teacher2d(root, part, **{**args, "lr": 1e-3}, resume=True)
    train_teacher2d(root, part, **args, resume=True)
    a, b = (torch.load(p, weights_only=True) for p in (whole["checkpoint"], part))
    for k, v in a["backbone"].items():
        assert torch.equal(v, b["backbone"][k]), k
    losses = [r["loss"] for r in read_metrics(tmp_path / "part.metrics.jsonl")]
    assert losses == [r["loss"] for r in read_metrics(whole["metrics_file"])] and len(losses) == 4
    train_teacher2d(root, part, **args, overwrite=True)  # starts over


def test_checkpoint_backbone_is_the_ppkt_teacher(trained):
    _, out, _ = trained
    seg = load_seg_teacher(out)
    teacher = build_teacher("resnet18", weights=str(out))
    x = torch.rand(2, 3, 45, 61, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = seg.encode(x)
    assert torch.allclose(teacher(x), feats["layer4"], atol=1e-6, rtol=1e-5)
    assert torch.allclose(build_teacher("resnet18", weights=str(out), stage="layer2")(x), feats["layer2"], atol=1e-6, rtol=1e-5)
    assert torch.equal(seg.mean, teacher.mean) and torch.equal(seg.std, teacher.std)  # same normalisation
    with pytest.raises(TeacherWeightsError, match="resnet34"):
        build_teacher("resnet34", weights=str(out))
    # the backbone init of SegTeacher reads the same files
    again = SegTeacher("resnet18", 3, backbone_weights=str(out))
    for k, v in seg.backbone.state_dict().items():
        assert torch.equal(v, again.backbone.state_dict()[k]), k


def test_metrics_equal_hand_computed_values_and_ignore_pixels_are_excluded():
    label = torch.tensor([[0, 0, 1, 255], [1, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 2], [1, 2, 0, 0]])
    conf = confusion_matrix(pred, label, num_classes=4, ignore_index=255)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    m = segmentation_metrics(conf, ["a", "b", "c", "d"])
    assert m["count"] == 6
    assert m["allacc"] == pytest.approx(4 / 6)
    assert m["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 1 / 2, "d": None})
    assert m["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)  # class d (absent everywhere) left out
    assert m["per_class_acc"] == pytest.approx({"a": 1 / 2, "b": 1.0, "c": 1 / 2, "d": None})
    assert m["macc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)  # class d (no label) left out
    # every pixel ignored: nothing counted
    assert confusion_matrix(pred, torch.full_like(label, 255), 4).sum() == 0
    with pytest.raises(ValueError, match="label values"):
        confusion_matrix(pred, torch.tensor([[0, 0, 1, 7], [1, 2, 2, 255]]), 4)


def test_evaluate_counts_every_labelled_pixel(trained):
    root, out, _ = trained
    m = evaluate_teacher2d(out, root, split="val", device="cpu")
    assert m["frames"] == 4 and m["split"] == "val"
    assert m["count"] == 4 * (H - 1) * W  # the unlabelled top row (255) is excluded
    conf = np.array(m["confusion_matrix"])
    assert m["allacc"] == pytest.approx(np.trace(conf) / conf.sum())
    assert m["class_names"] == CLASSES and conf.shape == (3, 3)


def test_dataset_augmentation_gives_training_crops(trained):
    root, _, _ = trained
    ds = SegFrames(root, "train", image_size=(40, 56), scale_range=(0.5, 2.0))
    assert len(ds) == 8
    for seed in range(6):
        img, lab = ds[(seed % 8, seed)]
        assert img.shape == (3, 40, 56) and lab.shape == (40, 56) and img.dtype == torch.float32
        assert 0 <= img.min() and img.max() <= 1
        assert set(lab.unique().tolist()) <= {0, 1, 2, 255}
    a, b = ds[(3, 123)], ds[(3, 123)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_missing_or_corrupt_label_is_a_clear_error(tmp_path):
    root = make_dataset(tmp_path / "data")
    missing = root / "frames" / "scene1" / "label" / "2.png"
    missing.unlink()
    with pytest.raises(Teacher2DDataError, match=re.escape(str(missing))):
        train_teacher2d(root, tmp_path / "t.pt", **TRAIN)
    assert not (tmp_path / "t.pt").exists()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(missing)
    corrupt = root / "frames" / "scene0" / "label" / "1.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = SegFrames(root, "train", image_size=(48, 64))
    with pytest.raises(Teacher2DDataError, match=f"{re.escape(str(corrupt))}.*corrupt"):
        ds[1]
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(corrupt)  # not a class id nor 255
    with pytest.raises(Teacher2DDataError, match=f"{re.escape(str(corrupt))}.*label values \\[7\\]"):
        ds[1]
    (root / "splits" / "val.txt").unlink()
    with pytest.raises(Teacher2DDataError, match="val.txt"):
        SegFrames(root, "val")


def test_checkpoint_of_another_format_or_arch_is_a_clear_error(trained, tmp_path):
    _, out, _ = trained
    other = tmp_path / "backbone.pth"
    save_atomic({"format": "ppkt-backbone", "state_dict": {}}, other)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(other))}.*ppkt-teacher2d"):
        load_seg_teacher(other)
    state = torch.load(out, weights_only=True)
    wrong_arch = tmp_path / "wrong_arch.pt"
    save_atomic({**state, "arch": "efficientnet_lite0"}, wrong_arch)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(wrong_arch))}.*efficientnet_lite0"):
        load_seg_teacher(wrong_arch)
    wrong_head = tmp_path / "wrong_head.pt"
    save_atomic({**state, "num_classes": 5}, wrong_head)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(wrong_head))}.*head"):
        load_seg_teacher(wrong_head)
    with pytest.raises(CheckpointError, match="not found"):
        load_seg_teacher(tmp_path / "nope.pt")


def test_cli_evaluate_prints_a_per_class_iou_table(trained, capsys):
    root, out, _ = trained
    assert cli_main(["teacher", "evaluate", "--checkpoint", str(out), "--data", str(root)]) == 0
    text = capsys.readouterr().out
    for name in CLASSES:
        assert name in text
    assert "mIoU" in text and "allAcc" in text
    args = build_parser().parse_args(["teacher", "train", "--data", "D", "--out", "o.pt", "--image-size", "60", "80",
                                      "--batch-size", "2", "--iterations", "5"])
    assert args.image_size == [60, 80] and args.batch_size == 2 and args.iterations == 5 and args.arch == "resnet18"


def test_cli_train_writes_a_checkpoint_that_evaluate_reads(trained, tmp_path, capsys):
    root, _, _ = trained
    out = tmp_path / "cli.pt"
    assert cli_main(["teacher", "train", "--data", str(root), "--out", str(out), "--iterations", "2",
                     "--batch-size", "2", "--image-size", "48", "64", "--device", "cpu", "--no-eval"]) == 0
    assert "teacher.weights=" in capsys.readouterr().out
    assert load_seg_teacher(out).num_classes == 3
    with pytest.raises(SystemExit) as stop:
        cli_main(["teacher"])  # no sub-command
    assert stop.value.code == 2 and "required: COMMAND" in capsys.readouterr().err
    other = make_dataset(tmp_path / "other")
    (other / "classes.json").write_text(json.dumps({"names": ["a", "b"], "ignore_index": 255}))
    with pytest.raises(Teacher2DDataError, match="classes"):
        evaluate_teacher2d(out, other, device="cpu")


@pytest.mark.parametrize("arch", ["resnet34", "resnet50"])
def test_larger_backbones_load_into_the_teacher(arch, tmp_path):
    torch.manual_seed(0)
    seg = SegTeacher(arch, num_classes=3).eval()
    path = save_atomic({"format": "ppkt-teacher2d", "version": 1, "arch": arch, "backbone": seg.backbone.state_dict(),
                        "head": seg.head.state_dict(), "num_classes": 3, "class_names": CLASSES}, tmp_path / "t.pt")
    x = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    assert seg(x).shape == (1, 3, 40, 52)
    with torch.no_grad():
        assert torch.allclose(build_teacher(arch, weights=str(path))(x), seg.encode(x)["layer4"], atol=1e-5, rtol=1e-4)
    assert load_seg_teacher(path).arch == arch
