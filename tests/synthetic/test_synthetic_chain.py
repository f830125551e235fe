"""The synthetic world feeds the rest of the pipeline unchanged: 2D teacher training and PPKT pretraining."""
from pathlib import Path

import pytest

from ppkt.config import load_config
from ppkt.models.teacher import build_teacher
from ppkt.synthetic.dataset import write_dataset
from ppkt.train.teacher2d import train_teacher2d
from ppkt.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "synthetic"
    return write_dataset(out, scenes=2, frames_per_scene=3, seed=7, image_size=(48, 64), point_spacing=0.05, progress=False)


def test_teacher_trains_on_the_written_world_and_loads_as_pretraining_teacher(world, tmp_path):
    ckpt = tmp_path / "teacher.pth"
    result = train_teacher2d(world, ckpt, iterations=3, batch_size=2, image_size=(48, 64), progress=False)
    assert Path(result["checkpoint"]).is_file() and 0.0 <= result["val"]["pixel_accuracy"] <= 1.0
    teacher = build_teacher("resnet18", weights=str(ckpt), stage="layer3")
    assert teacher.out_channels == 256


def test_pretraining_reads_the_written_frames(world, tmp_path):
    cfg = load_config(ROOT / "configs" / "pretrain_synthetic.yaml", [
        f"data.roots=[{world / 'frames'}]", "data.image_size=[48,64]", "data.voxel_size=0.1",
        "student.channels=[8,16,16,16,16,16,16,16]", "loss.n_sub=128", "train.iterations=2",
        "train.batch_size=2", "train.workers=0", f"train.out_dir={tmp_path / 'run'}",
    ])
    out = pretrain(cfg)
    assert (out / "backbone.pth").is_file()
