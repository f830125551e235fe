"""The paper's baselines as pretraining methods (loss.name = ppkd / global_kd / gupta / crd) on real 7-Scenes frames:
each model's loss is its formula on the model's own parts, no gradient reaches the frozen teacher, a short run lowers
the loss, and the frame-level methods export the encoder only (the fine-tuning load report says so)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ppkt.checkpoint import BACKBONE_FORMAT, load_checkpoint, save_atomic
from ppkt.config import ConfigError, load_config, validate_pretrain
from ppkt.data.pairs import PixelPointFrames, collate_pairs
from ppkt.losses.global_kd import pool_per_sample
from ppkt.models.seg_teacher import SEG_TEACHER_VERSION, SegTeacher
from ppkt.models.segmentor import Segmentor, load_backbone
from ppkt.models.teacher import TEACHER_CKPT_FORMAT
from ppkt.train.logging import read_metrics
from ppkt.train.pretrain import build_model, pretrain, trainable

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT / "data" / "7scenes-redkitchen"
CHANNELS = [8, 16, 32, 32, 32, 32, 24, 24]
TINY = [
    f"data.roots=[{FRAMES}]", "data.image_size=[60,80]", "data.voxel_size=0.1", "data.stride=4",
    "augment.resize=[0.9,1.1]", "student.arch=SR-UNet14", f"student.channels=[{','.join(map(str, CHANNELS))}]",
    "teacher.arch=efficientnet_lite0", "teacher.stage=stage4", "loss.n_sub=256", "loss.embed_dim=32",
    "optim.lr=0.05", "optim.lr_step=1000", "train.batch_size=2", "train.workers=0", "train.log_every=1",
    "train.threads=2",
]

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture(scope="module")
def seg_teacher_file(tmp_path_factory):
    """A ResNet18-FCN segmentation teacher of 5 classes in the `ppkt teacher train` format (random weights)."""
    torch.manual_seed(0)
    model = SegTeacher("resnet18", num_classes=5)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_atomic({"format": TEACHER_CKPT_FORMAT, "version": SEG_TEACHER_VERSION, "arch": "resnet18", "num_classes": 5,
                 "backbone": model.backbone.state_dict(), "head": model.head.state_dict(),
                 "class_names": [f"c{i}" for i in range(5)]}, path)
    return path


def method_args(name: str, teacher_file: Path) -> list:
    return {"ppkd": ["loss.name=ppkd", "teacher.arch=resnet18", "teacher.stage=null",
                     f"teacher.weights={teacher_file}", "loss.kd_temperature=1.0"],
            "global_kd": ["loss.name=global_kd"],
            "gupta": ["loss.name=gupta"],
            "crd": ["loss.name=crd", "loss.temperature=0.07", "loss.bank_size=6"]}[name]


def tiny_config(out: Path, *extra: str):
    return load_config(ROOT / "configs" / "pretrain_demo.yaml", TINY + [f"train.out_dir={out}", *extra])


def batch_of(cfg, *items):
    frames = PixelPointFrames(cfg.data, cfg.augment, None)
    return collate_pairs([frames[(i, 7)] for i in items])


def pooled(model, batch):
    x = model.student.encode(batch.feats, batch.coords, batch.batch_size)
    return pool_per_sample(x.features, x.indices[:, 0].long(), batch.batch_size)


@pytest.mark.parametrize("name", ["ppkd", "global_kd", "gupta", "crd"])
def test_each_model_computes_its_formula_and_trains_no_teacher(name, seg_teacher_file, tmp_path):
    cfg = validate_pretrain(tiny_config(tmp_path / "run", *method_args(name, seg_teacher_file)))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = batch_of(cfg, 0, 1)
    assert not model.teacher.training and not any(p.requires_grad for p in model.teacher.parameters())
    loss = model(batch, torch.Generator().manual_seed(3))
    with torch.no_grad():
        if name == "ppkd":  # T^2 KL(teacher's pixel distribution || the point head's), on the 256 drawn pairs
            idx = torch.randperm(batch.coords.shape[0], generator=torch.Generator().manual_seed(3))[:256]
            f3d = model.student(batch.feats, batch.coords, batch.batch_size)
            t = model.teacher(batch.images).permute(0, 2, 3, 1).reshape(2, 60 * 80, 5)[batch.voxel_batch[idx],
                                                                                         batch.pixel[idx]]
            s = model.head(f3d[idx])
            want = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1).mean()
        elif name == "global_kd":  # 16 KL(ImageNet softmax at T=4 || pooled encoder's classifier at T=4)
            s, t = model.classifier.linear(pooled(model, batch)) / 4, model.teacher(batch.images) / 4
            assert t.shape == (2, 1000)
            want = 16 * (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1).mean()
        elif name == "gupta":  # mean over frames of the squared distance of the mapped 3D to the 2D pooled feature / C2
            f2d = model.teacher(batch.images).mean(dim=(2, 3))
            want = ((model.map(pooled(model, batch)) - f2d) ** 2).sum(1).mean() / f2d.shape[1]
        else:  # InfoNCE of u_b against w_b, the other frame's w and (an empty bank at first) nothing else
            u = F.normalize(model.g3d(pooled(model, batch)), dim=1)
            w = F.normalize(model.g2d(model.teacher(batch.images).mean(dim=(2, 3))), dim=1)
            want = -torch.log_softmax(u @ w.T / 0.07, dim=1).diagonal().mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6)
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    grads = {n for n, p in model.student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("enc.") for n in grads)
    decoder = any(n.startswith("dec.") for n in grads)
    assert decoder == (name == "ppkd")  # the frame-level methods reach the encoder only
    if name == "crd":  # this batch's 2D embeddings entered the bank
        assert int(model.crd.filled) == 2 and "crd.bank" in trainable(model).state_dict()


@pytest.mark.parametrize("name", ["ppkd", "global_kd", "gupta", "crd"])
def test_short_run_lowers_the_loss_and_exports(name, seg_teacher_file, tmp_path):
    # crd: the batch's other frame as the only negative; with the 5 frames of the tiny data a memory bank would hold
    # the positive's own earlier embeddings (the bank itself is tested in tests/losses/test_baselines.py)
    extra = ["loss.bank_size=0"] if name == "crd" else []
    out = pretrain(tiny_config(tmp_path / "run", *method_args(name, seg_teacher_file), *extra, "train.iterations=25",
                               "train.checkpoint_every=100"))
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    assert len(losses) == 25 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    export = load_checkpoint(out / "backbone.pth", BACKBONE_FORMAT)
    assert export["pretrain"]["method"] == name
    segmentor = Segmentor("SR-UNet14", 4, 3, CHANNELS)
    report = load_backbone(segmentor, out / "backbone.pth")
    if name == "ppkd":
        assert export["pretrain"]["part"] == "whole" and report.missing == ["head.weight", "head.bias"]
    else:  # the encoder only: the decoder is new, and the report says why
        assert export["pretrain"]["part"] == "encoder"
        assert all(k.startswith(("conv_input.", "down.", "enc.")) for k in export["state_dict"])
        assert report.loaded and all(k.startswith("backbone.") for k in report.loaded)
        assert {k.split(".")[1] for k in report.missing} == {"up", "dec"} | {"weight", "bias"}
        assert f"encoder only: pretrained by {name}" in report.summary()


def test_baseline_configs_say_what_they_need(tmp_path):
    with pytest.raises(ConfigError, match="teacher.weights: loss.name=ppkd needs a 2D segmentation teacher"):
        validate_pretrain(tiny_config(tmp_path, "loss.name=ppkd"))
    with pytest.raises(ConfigError, match="teacher.arch: loss.name=global_kd distils EfficientNet-Lite0"):
        validate_pretrain(tiny_config(tmp_path, "loss.name=global_kd", "teacher.arch=resnet18", "teacher.stage=null"))
    with pytest.raises(ConfigError, match="loss.name: must be one of"):
        validate_pretrain(tiny_config(tmp_path, "loss.name=kd"))


def test_ppkd_refuses_a_teacher_of_another_arch(seg_teacher_file, tmp_path):
    cfg = validate_pretrain(tiny_config(tmp_path, "loss.name=ppkd", f"teacher.weights={seg_teacher_file}",
                                        "teacher.arch=resnet34", "teacher.stage=null"))
    with pytest.raises(ConfigError, match="resnet18 segmentation teacher, but teacher.arch=resnet34"):
        build_model(cfg)

