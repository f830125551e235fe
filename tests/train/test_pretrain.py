"""Short real pretraining runs on bundled frames: the loss falls, stop + resume equals no stop, bad input is handled."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppkt.cli import main as cli_main
from ppkt.config import load_config
from ppkt.models.sparse_unet import build_sparse_unet
from ppkt.checkpoint import BACKBONE_FORMAT, CheckpointError, load_checkpoint, load_state_strict
from ppkt.train.logging import read_metrics
from ppkt.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT / "data" / "7scenes-redkitchen"
TINY = [
    f"data.roots=[{FRAMES}]", "data.image_size=[60,80]", "data.voxel_size=0.1", "data.stride=4",
    "augment.resize=[0.9,1.1]", "student.arch=SR-UNet14", "student.channels=[8,16,32,32,32,32,24,24]",
    "teacher.arch=efficientnet_lite0", "teacher.stage=stage4", "loss.n_sub=256", "loss.embed_dim=32",
    "optim.lr=0.05", "optim.lr_step=1000", "train.batch_size=2", "train.workers=0", "train.log_every=1", "train.threads=2",
]


def tiny_config(out: Path, *extra: str):
    return load_config(ROOT / "configs" / "pretrain_demo.yaml", TINY + [f"train.out_dir={out}", *extra])


def test_short_pretraining_lowers_the_loss(tmp_path):
    out = pretrain(tiny_config(tmp_path / "run", "train.iterations=40", "train.checkpoint_every=100"))
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    assert len(losses) == 40
    # at the start the 3D embeddings carry no information: the loss is at least chance, log(n_sub)
    assert losses[0] > np.log(256) - 0.2
    assert np.mean(losses[-5:]) < min(losses[0] - 2.0, np.log(256) - 0.2)
    assert (out / "loss_curve.png").stat().st_size > 1000 and any((out / "tensorboard").iterdir())
    export = load_checkpoint(out / "backbone.pth", BACKBONE_FORMAT)
    student = build_sparse_unet(export["arch"], export["in_channels"], export["channels"])
    load_state_strict(student, export["state_dict"], out / "backbone.pth", "backbone")


def test_stop_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    args = ["train.iterations=6", "train.checkpoint_every=3"]
    straight = pretrain(tiny_config(tmp_path / "straight", *args))
    pretrain(tiny_config(tmp_path / "stopped", *args), stop_after=3)
    resumed = pretrain(tiny_config(tmp_path / "stopped", *args), resume=True)
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    loss = lambda run: [r["loss"] for r in read_metrics(run / "metrics.jsonl")]
    assert loss(straight) == loss(resumed)


def test_resume_with_another_architecture_fails_clearly(tmp_path):
    pretrain(tiny_config(tmp_path / "run", "train.iterations=1"))
    with pytest.raises(CheckpointError, match="last.pt"):
        pretrain(tiny_config(tmp_path / "run", "train.iterations=2", "student.arch=SR-UNet18"), resume=True)


def test_frames_with_bad_depth_are_skipped_and_counted(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(FRAMES / "camera-intrinsics.txt", frames)
    for n in ("000000", "000200", "000400"):
        for kind in ("color.jpg", "depth.png", "pose.txt"):
            shutil.copy(FRAMES / f"frame-{n}.{kind}", frames)
    Image.fromarray(np.zeros((480, 640), dtype=np.uint16)).save(frames / "frame-000200.depth.png")
    out = pretrain(tiny_config(tmp_path / "run", f"data.roots=[{frames}]", "data.stride=1", "train.iterations=3", "train.batch_size=3"))
    records = read_metrics(out / "metrics.jsonl")
    assert records[-1]["skipped_frames"] == 3  # the empty frame, once per iteration


def test_cli_lists_commands_and_reports_bad_config(capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert "pretrain" in capsys.readouterr().out
    assert cli_main(["pretrain", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: config file not found" in capsys.readouterr().err
    assert cli_main(["pretrain", "--config", str(ROOT / "configs" / "pretrain_demo.yaml"), f"data.roots=[{tmp_path}]"]) == 2
    assert str(tmp_path) in capsys.readouterr().err
