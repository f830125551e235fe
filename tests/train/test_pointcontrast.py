"""PointContrast pretraining (`loss.name=pointcontrast`) on real 7-Scenes frames paired by `ppkt overlaps`."""
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.checkpoint import BACKBONE_FORMAT, load_checkpoint
from ppkt.cli import main as cli_main
from ppkt.config import ConfigError, load_config, validate_pretrain
from ppkt.data.views import MatchedViews, collate_views
from ppkt.losses.pointcontrast import pointinfonce_loss
from ppkt.train.logging import read_metrics
from ppkt.train.pretrain import build_model, pretrain

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT / "data" / "7scenes-redkitchen"
TINY = [
    f"data.roots=[{FRAMES}]", "data.image_size=[60,80]", "data.voxel_size=0.1", "data.frame=world",
    "loss.name=pointcontrast", "loss.temperature=0.07", "student.arch=SR-UNet14",
    "student.channels=[8,16,32,32,32,32,24,24]", "loss.n_sub=256", "loss.embed_dim=32", "optim.lr=0.05",
    "optim.lr_step=1000", "train.batch_size=2", "train.workers=0", "train.log_every=1", "train.threads=2",
]

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    assert cli_main(["overlaps", str(FRAMES), "--out", str(path), "--min-overlap", "0.3"]) == 0
    return path


def tiny_config(out: Path, pairs: Path, *extra: str):
    return load_config(ROOT / "configs" / "pretrain_demo.yaml", TINY + [f"data.overlaps={pairs}", f"train.out_dir={out}",
                                                                         *extra])


def test_views_are_matched_in_world_coordinates_and_augmented_apart(pairs_file, tmp_path):
    cfg = tiny_config(tmp_path / "run", pairs_file)
    views = MatchedViews(cfg.data, cfg.augment, cfg.data.overlaps, cfg.loss.match_radius)
    assert len(views) > 0
    pair = views[(0, 3)]
    d = (pair.a.points[pair.match_a] - pair.b.points[pair.match_b]).norm(dim=1)
    assert pair.match_a.numel() > 100 and float(d.max()) <= 1.5 * 0.1 + 1e-6  # within 1.5 voxels, world metres
    assert not torch.equal(pair.a.point_transform.rotation, pair.b.point_transform.rotation)  # augmented apart
    batch = collate_views([pair, views[(1, 4)]])
    assert batch.views == 4 and sorted(set(batch.coords[:, 0].tolist())) == [0, 1, 2, 3]
    assert (batch.coords[batch.match_a, 0] % 2 == 0).all() and (batch.coords[batch.match_b, 0] % 2 == 1).all()
    # the model's loss is PointInfoNCE of the matched voxels' embeddings
    torch.manual_seed(0)
    model = build_model(cfg)
    loss = model(batch, torch.Generator().manual_seed(5))
    pick = torch.randperm(batch.match_a.numel(), generator=torch.Generator().manual_seed(5))[:256]
    f = model.student(batch.feats, batch.coords, batch.views)
    want = pointinfonce_loss(model.g3d(f[batch.match_a[pick]]), model.g3d(f[batch.match_b[pick]]), 0.07)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_short_pointcontrast_run_lowers_the_loss_and_exports(pairs_file, tmp_path):
    out = pretrain(tiny_config(tmp_path / "run", pairs_file, "train.iterations=30", "train.checkpoint_every=100"))
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    assert len(losses) == 30 and losses[0] > np.log(256) - 0.3
    assert np.mean(losses[-5:]) < losses[0] - 0.5
    export = load_checkpoint(out / "backbone.pth", BACKBONE_FORMAT)
    assert export["pretrain"]["method"] == "pointcontrast" and "teacher" not in export["pretrain"]


def test_pointcontrast_config_needs_pairs_and_the_world_frame(tmp_path):
    cfg = load_config(ROOT / "configs" / "pretrain_demo.yaml", TINY[:3] + ["loss.name=pointcontrast",
                                                                          "data.frame=camera"])
    with pytest.raises(ConfigError, match=r"(?s)data.overlaps.*data.frame|data.frame.*data.overlaps"):
        validate_pretrain(cfg)
