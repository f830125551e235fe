"""`ppkt predict` against independent truth: the labels `ppkt evaluate` gives the same points, tiles against one
pass, fused RGB-D frames against the synthetic world's surfaces, and the refusals of scans a model cannot read."""
import json

import numpy as np
import pytest
import torch

from ppkt.cli import main
from ppkt.config import load_config
from ppkt.data.ply import read_ply, write_ply
from ppkt.predict.outputs import SCANNET20_NYU40, write_scannet_labels
from ppkt.predict.scan import read_scan
from ppkt.predict.tiles import run_tiled
from ppkt.synthetic.dataset import make_scene, write_dataset
from ppkt.synthetic.pointcloud import sample_surface
from ppkt.train.evaluate import evaluate_checkpoint
from ppkt.train.finetune import finetune
from ppkt.train.finetune_config import FinetuneConfig

pytestmark = pytest.mark.usefixtures("two_threads")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A world without depth noise and a segmentation model fine-tuned on it for a few iterations."""
    root = tmp_path_factory.mktemp("predict")
    world = write_dataset(root / "world", scenes=3, frames_per_scene=3, seed=4, point_spacing=0.05, depth_noise=False,
                          compact=True, progress=False)
    cfg = load_config("configs/finetune_synthetic.yaml", [
        f"data.root={world}", f"data.classes={world / 'classes.json'}", "data.max_voxels=4000", "train.iterations=3",
        "train.eval_every=0", "train.eval_ply=false", "train.workers=0", "train.threads=2", "train.log_every=1",
        "model.channels=[8,8,8,8,8,8,8,8]", f"train.out_dir={root / 'run'}"], FinetuneConfig)
    run = finetune(cfg)
    scene = world / "scenes" / (world / "splits" / "val.txt").read_text().split()[0]
    return world, run / "checkpoints" / "last.pt", scene


def evaluate_labels(checkpoint, scene, tmp_path):
    """The per-point predictions `ppkt evaluate` writes for `scene` (the `pred` property of its PLY)."""
    (tmp_path / "data" / "splits").mkdir(parents=True)
    (tmp_path / "data" / "splits" / "one.txt").write_text(str(scene) + "\n")
    evaluate_checkpoint(checkpoint, tmp_path / "data", "one", tmp_path / "eval", "cpu", 0, True)
    return np.asarray(read_ply(tmp_path / "eval" / "ply" / f"{scene.name}_pred.ply")[0]["pred"], dtype=np.int64)


def write_scan_ply(path, coord, color=None, text=False):
    from plyfile import PlyData, PlyElement

    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")] + ([("red", "u1"), ("green", "u1"), ("blue", "u1")] if color is not None else [])
    rows = np.empty(len(coord), dtype=fields)
    for i, a in enumerate("xyz"):
        rows[a] = coord[:, i]
    if color is not None:
        for i, a in enumerate(("red", "green", "blue")):
            rows[a] = color[:, i]
    PlyData([PlyElement.describe(rows, "vertex")], text=text).write(str(path))
    return path


def test_labels_per_point_in_input_order_equal_evaluate(trained, tmp_path, capsys):
    world, ckpt, scene = trained
    coord, color = np.load(scene / "coord.npy").astype(np.float32), np.load(scene / "color.npy")
    truth = evaluate_labels(ckpt, scene, tmp_path)
    order = np.random.default_rng(0).permutation(len(coord))  # a scan in another point order
    binary = write_scan_ply(tmp_path / "binary.ply", coord, color)
    ascii_ = write_scan_ply(tmp_path / "ascii.ply", coord[order], color[order], text=True)
    assert main(["predict", "--checkpoint", str(ckpt), str(binary), str(ascii_), str(scene), "--out",
                 str(tmp_path / "out"), "--quiet"]) == 0
    out = tmp_path / "out"
    assert np.array_equal(np.load(out / "binary.labels.npy"), truth)
    assert np.array_equal(np.load(out / "ascii.labels.npy"), truth[order])
    assert np.array_equal(np.load(out / f"{scene.name}.labels.npy"), truth)
    ply = read_ply(out / "binary.ply")[0]
    assert np.array_equal(np.asarray(ply["label"]), truth) and np.allclose(np.asarray(ply["x"]), coord[:, 0])
    summary = json.loads((out / "summary.json").read_text())
    first = summary["scans"][0]
    assert first["points"] == len(coord) and sum(first["points_per_class"].values()) == len(coord)
    assert summary["model"]["classes"] == json.loads((world / "classes.json").read_text())["names"]
    assert (out / "binary.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["info", str(out / "summary.json")]) == 0
    assert f"binary.ply: {len(coord)} points" in capsys.readouterr().out
    assert main(["info", str(out / "binary.labels.npy")]) == 0
    text = capsys.readouterr().out
    assert "ppkt predict's labels" in text and f"shape: ({len(coord)},)" in text
    assert f"values: {truth.min()} to {truth.max()}" in text

    no_colour = write_scan_ply(tmp_path / "grey.ply", coord)
    assert main(["predict", "--checkpoint", str(ckpt), str(no_colour), "--out", str(tmp_path / "o2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "grey.ply" in err and "reads colour" in err and "Traceback" not in err


def test_units_and_up_axis_are_refused_with_the_fix(trained, tmp_path, capsys):
    _, ckpt, scene = trained
    coord, color = np.load(scene / "coord.npy").astype(np.float32), np.load(scene / "color.npy").astype(np.float32)
    np.save(tmp_path / "mm.npy", np.c_[coord * 1000, color])
    np.save(tmp_path / "yup.npy", np.c_[coord[:, 0], coord[:, 2], -coord[:, 1], color])  # z up turned to y up
    args = ["predict", "--checkpoint", str(ckpt), "--quiet", "--no-preview", "--out"]
    assert main([*args, str(tmp_path / "a"), str(tmp_path / "mm.npy")]) == 2
    assert "--scale 0.001" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "b"), str(tmp_path / "yup.npy")]) == 2
    assert "--up=y" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "c"), str(tmp_path / "mm.npy"), "--scale", "0.001"]) == 0
    assert main([*args, str(tmp_path / "c"), str(tmp_path / "yup.npy"), "--up", "y"]) == 0
    same = np.load(tmp_path / "c" / "mm.labels.npy")
    assert np.mean(np.load(tmp_path / "c" / "yup.labels.npy") == same) > 0.99  # float rounding may move a voxel
    assert main([*args, str(tmp_path / "mm.npy"), str(tmp_path / "mm.npy")]) == 2  # a file as --out
    assert "is a file" in capsys.readouterr().err
    assert main([*args, "/proc/ppkt-out", str(tmp_path / "mm.npy")]) == 2  # a place no folder can be made
    assert "--out: cannot make the folder /proc/ppkt-out" in capsys.readouterr().err


def test_tiles_equal_one_pass_with_the_receptive_margin():
    from ppkt.models.segmentor import Segmentor

    torch.manual_seed(0)
    model = Segmentor("SR-UNet14", 5, 3, [4, 4, 4, 4, 4, 4, 4, 4]).eval()
    with torch.no_grad():  # weights large enough for far voxels to matter, non-trivial batch-norm statistics
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
    g = torch.Generator().manual_seed(1)
    # a long strip, 700 x 12 voxels, with a bumpy floor: tiles of core 48 and margin 128 (>= radius 122)
    xy = torch.cartesian_prod(torch.arange(700), torch.arange(12))
    z = (torch.rand(len(xy), generator=g) * 3).long()
    coords = torch.cat([xy, z[:, None]], 1)
    feats = torch.rand(len(coords), 3, generator=g) - 0.5
    calls = []

    @torch.no_grad()
    def forward(f, c):
        calls.append(len(c))
        return model(f, torch.cat([torch.zeros(len(c), 1, dtype=torch.long), c], 1).int(), 1)

    whole = forward(feats, coords)
    tiled = run_tiled(forward, feats, coords, core=48, margin=model.backbone.receptive_radius())
    assert len(calls) > 3 and max(calls[1:]) < len(coords)  # really several tiles, each smaller than the scan
    scale = whole.abs().max()
    assert (tiled - whole).abs().max() <= 1e-5 * scale
    cut = run_tiled(forward, feats, coords, core=48, margin=16)  # too little context: the borders differ
    assert (cut - whole).abs().max() > 1e-2 * scale


def test_rgbd_folder_fuses_onto_the_worlds_surfaces(trained):
    from scipy.spatial import cKDTree

    world, _, scene = trained
    frames = world / "frames" / scene.name
    scan = read_scan(frames, 0.05, progress=False)
    assert scan.kind == "frames" and scan.color is not None and len(scan.coord) > 1000
    # the ground truth: the room's surfaces sampled every 1 cm (every surface point within 0.9 cm of a sample)
    room = make_scene(4, int(scene.name.split("_")[1]))
    surface = sample_surface(room, 0.01, rng=np.random.default_rng(0)).coord
    distance, _ = cKDTree(surface).query(scan.coord.astype(np.float64))
    # a fused point is the mean of a 5 cm voxel's back-projected points: on a plane it lies on it; where surfaces
    # meet (edges, corners) the mean falls between them, up to about half a voxel
    assert np.median(distance) < 0.01 and np.percentile(distance, 95) < 0.02 and distance.max() < 0.04


def test_scannet_submission_file(tmp_path):
    write_scannet_labels(tmp_path / "scene0707_00.txt", np.array([0, 19, 13, 1]), "scannet20")
    assert (tmp_path / "scene0707_00.txt").read_text().split() == ["1", "39", "16", "2"]
    assert SCANNET20_NYU40[12] == 14  # desk
    from ppkt.errors import UserError

    with pytest.raises(UserError, match="scannet20"):
        write_scannet_labels(tmp_path / "x.txt", np.array([0]), "synthetic")


def test_a_colour_dropout_model_reads_a_scan_without_colour(trained, tmp_path, capsys):
    world, _, scene = trained
    cfg = load_config("configs/finetune_synthetic.yaml", [
        f"data.root={world}", f"data.classes={world / 'classes.json'}", "data.max_voxels=2000", "train.iterations=1",
        "data.color_dropout=0.5", "data.val_split=''", "train.workers=0", "train.threads=2",
        "model.channels=[8,8,8,8,8,8,8,8]", f"train.out_dir={tmp_path / 'run'}"], FinetuneConfig)
    ckpt = finetune(cfg) / "checkpoints" / "last.pt"
    coord = np.load(scene / "coord.npy").astype(np.float32)
    grey = write_scan_ply(tmp_path / "grey.ply", coord)
    assert main(["predict", "--checkpoint", str(ckpt), str(grey), "--out", str(tmp_path / "out"), "--quiet",
                 "--no-preview"]) == 0
    assert "the scan has no colour" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "colour dropout 0.5" in summary["scans"][0]["note"] and summary["model"]["input_features"] == "color"
    # the labels are those of the model given the constant colour of a dropped sample
    from ppkt.data.features import NO_COLOR
    from ppkt.predict.scan import read_scan
    from ppkt.predict.segment import segment_scan
    from ppkt.train.evaluate import load_finetuned

    model, _, _, _ = load_finetuned(ckpt)
    white = read_scan(grey, 0.05)
    white.color = np.full_like(white.coord, 255.0 * (NO_COLOR + 0.5))
    expected = segment_scan(model, white, 0.05).labels
    assert np.array_equal(np.load(tmp_path / "out" / "grey.labels.npy"), expected)


def test_frames_know_their_up_axis_from_their_cameras(trained, tmp_path, capsys):
    """The world's cameras are upright in its z-up frame; the same frames with every pose turned so that the world's z
    becomes -y (as a capture whose first camera defines the frame) are refused, naming --up=-y, and read with it."""
    import shutil

    from ppkt.predict.scan import to_model_frame

    world, ckpt, scene = trained
    frames = tmp_path / "frames"
    shutil.copytree(world / "frames" / scene.name, frames)
    upright = read_scan(frames, 0.05, progress=False)
    assert upright.up_hint[2] > 0.9
    turn = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # z -> -y
    for pose_file in (frames / "pose").glob("*.txt"):
        np.savetxt(pose_file, turn @ np.loadtxt(pose_file))
    assert main(["predict", "--checkpoint", str(ckpt), str(frames), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--up=-y" in capsys.readouterr().err
    turned = to_model_frame(read_scan(frames, 0.05, progress=False), up="-y")
    # the same room again (a point may change voxel by rounding): heights and size as before
    assert abs(len(turned.coord) - len(upright.coord)) < 0.01 * len(upright.coord)
    q = [5, 50, 95]
    assert np.allclose(np.percentile(turned.coord[:, 2], q), np.percentile(upright.coord[:, 2], q), atol=0.01)
