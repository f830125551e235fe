"""The synthetic world feeds the rest of the pipeline unchanged: 2D teacher training and PPKT pretraining."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ppkt.config import load_config
from ppkt.models.teacher import build_teacher
from ppkt.synthetic.dataset import write_dataset
from ppkt.train.teacher2d import evaluate_teacher2d, train_teacher2d
from ppkt.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "synthetic"
    return write_dataset(out, scenes=2, frames_per_scene=3, seed=7, image_size=(48, 64), point_spacing=0.05, progress=False)


def test_teacher_trains_on_the_written_world_and_loads_as_pretraining_teacher(world, tmp_path):
    ckpt = tmp_path / "teacher.pth"
    result = train_teacher2d(world, ckpt, iterations=3, batch_size=2, image_size=(48, 64), progress=False)
    assert Path(result["checkpoint"]).is_file() and result["val"]["frames"] == 3
    # the labels the world wrote are learnt from its images: after 3 iterations the teacher beats, on the frames it
    # saw, the best input-blind guess (the majority class everywhere: allAcc = f_max, mIoU = f_max / C for the C
    # classes present). Measured with world seeds 7, 8 x training seeds 0, 1, 2: allAcc 0.59-0.75 against
    # f_max 0.48 / 0.52, mIoU 0.16-0.22 against 0.06 / 0.09. (3 frames of one scene do not generalise to the
    # val scene reliably: its allAcc ranged 0.36-0.59 against f_max 0.38 / 0.41.)
    seen = evaluate_teacher2d(ckpt, world, split="train", device="cpu")
    train_scenes = (world / "splits" / "train.txt").read_text().split()
    labels = np.concatenate([np.asarray(Image.open(p)).ravel() for s in train_scenes
                             for p in (world / "frames" / s / "label").glob("*.png")])
    freq = np.bincount(labels[labels != 255], minlength=len(json.loads((world / "classes.json").read_text())["names"]))
    f_max, classes = freq.max() / freq.sum(), int((freq > 0).sum())
    assert seen["frames"] == 3 and seen["count"] == freq.sum() and classes > 5
    assert seen["allacc"] > f_max + 0.05 and seen["miou"] > f_max / classes + 0.05
    teacher = build_teacher("resnet18", weights=str(ckpt), stage="layer3")
    assert teacher.out_channels == 256


def test_pretraining_reads_the_written_frames(world, tmp_path):
    cfg = load_config(ROOT / "configs" / "pretrain_synthetic.yaml", [
        f"data.roots=[{world / 'frames'}]", "data.image_size=[48,64]", "data.voxel_size=0.1",
        "student.channels=[8,16,16,16,16,16,16,16]", "loss.n_sub=128", "train.iterations=2",
        "train.batch_size=2", "train.workers=0", f"train.out_dir={tmp_path / 'run'}",
    ])
    out = pretrain(cfg)
    # the export loads into the student it names, and holds trained weights: its features of the world's frames differ
    # from those of the same student at its initial weights (the seed's)
    import torch

    from ppkt.checkpoint import BACKBONE_FORMAT, load_checkpoint
    from ppkt.data.pairs import PixelPointFrames, collate_pairs
    from ppkt.models.sparse_unet import build_sparse_unet
    from ppkt.train.pretrain import build_model

    export = load_checkpoint(out / "backbone.pth", BACKBONE_FORMAT)
    trained = build_sparse_unet(export["arch"], export["in_channels"], export["channels"])
    trained.load_state_dict(export["state_dict"])
    torch.manual_seed(cfg.train.seed)
    initial = build_model(cfg).student
    batch = collate_pairs([PixelPointFrames(cfg.data, cfg.augment)[(0, 0)]])
    with torch.no_grad():
        a = trained.eval()(batch.feats, batch.coords, batch.batch_size)
        b = initial.eval()(batch.feats, batch.coords, batch.batch_size)
    assert a.shape == b.shape and (a - b).abs().max() > 1e-3
    # and not only through batch-norm statistics: the weights themselves were trained
    params = dict(initial.named_parameters())
    moved = [k for k in params if not torch.equal(export["state_dict"][k], params[k].detach())]
    assert len(moved) > len(params) // 2
