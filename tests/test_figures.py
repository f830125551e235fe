"""`ppkt figures`: each command writes its figure and the data it plotted, read back here."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from ppkt.cli import main as cli_main
from ppkt.config import load_config
from ppkt.data.pairs import PixelPointFrames
from ppkt.figures import pca_colors
from ppkt.synthetic.dataset import write_dataset
from ppkt.train.logging import read_metrics
from ppkt.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "data" / "7scenes-redkitchen"

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


def test_tsne_of_global_and_pixel_features(tmp_path):
    world = write_dataset(tmp_path / "world", scenes=3, frames_per_scene=3, seed=4, workers=1, point_spacing=0.1,
                          progress=False, compact=True)
    out = tmp_path / "tsne.png"
    assert cli_main(["figures", "tsne", "--data", str(world), "--out", str(out), "--split", "train", "--scenes", "2",
                     "--pixels", "15"]) == 0
    assert out.stat().st_size > 5000
    points = np.load(out.with_suffix(".npz"))
    assert points["global_xy"].shape == (6, 2) and points["pixel_xy"].shape == (6 * 15, 2)  # 2 scenes x 3 frames
    assert len(points["pixel_class"]) == 90 and np.isfinite(points["pixel_xy"]).all()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig") / "run"
    cfg = load_config(ROOT / "configs" / "pretrain_demo.yaml", [
        f"data.roots=[{FRAMES}]", "data.image_size=[60,80]", "data.voxel_size=0.1", "data.stride=4",
        "student.arch=SR-UNet14", "student.channels=[8,16,32,32,32,32,24,24]", "teacher.arch=efficientnet_lite0",
        "teacher.stage=stage4", "loss.n_sub=256", "loss.embed_dim=32", "train.batch_size=2", "train.workers=0",
        "train.log_every=1", "train.threads=2", "train.iterations=3", f"train.out_dir={out}"])
    return pretrain(cfg)


def test_pca_colours_of_student_features_before_and_after(run, tmp_path):
    assert cli_main(["figures", "pca", "--run", str(run), "--out", str(tmp_path / "pca"), "--frame", "1"]) == 0
    cfg = load_config(run / "config.yaml")
    cfg.augment.enabled = False
    voxels = PixelPointFrames(cfg.data, cfg.augment)[(1, 0)].coords.shape[0]
    for name in ("before", "after"):
        vertex = PlyData.read(str(tmp_path / "pca" / f"{name}.ply"))["vertex"]
        assert vertex.count == voxels
    assert (tmp_path / "pca" / "pca.png").stat().st_size > 5000


def test_pca_colours_follow_the_main_axes():
    # features varying along one direction only: the first component orders the points, the others are flat
    t = np.linspace(-1, 1, 50)
    feats = torch.from_numpy(np.stack([t, 2 * t, np.zeros_like(t)], 1))
    rgb = pca_colors(feats)
    assert rgb.shape == (50, 3) and rgb.dtype == np.uint8
    red = rgb[:, 0].astype(int)
    assert (np.diff(red) >= 0).all() or (np.diff(red) <= 0).all()
    assert abs(int(red[0]) - int(red[-1])) == 255


def test_loss_curves_of_several_runs(run, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert cli_main(["figures", "curves", str(run), str(run), "--labels", "a", "b", "--out", str(out)]) == 0
    assert out.stat().st_size > 5000
    # the plotted lines, read back from the figure's own data, are the runs' logged losses
    logged = [[float(r["iteration"]), float(r["loss"])] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    plotted = json.loads(out.with_suffix(".json").read_text())
    assert [s["label"] for s in plotted["series"]] == ["a", "b"] and len(logged) == 3
    assert all(s["points"] == logged for s in plotted["series"])
    assert cli_main(["figures", "curves", str(run), "--labels", "a", "b", "--out", str(out)]) == 2
    assert "ppkt: error: --labels: 2 labels for 1 runs" in capsys.readouterr().err
