"""VoteNet on the SR-UNet, built from configs/detection_synthetic.yaml and run on tiny hand-made scenes whose boxes
are known: the loss falls, evaluation writes its table and files, exact resume, prediction files of another system."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.cli import main as ppkt
from ppkt.config import ConfigError, load_config
from boxes_reference import points_in_box
from ppkt.detection.boxes import nms_3d
from ppkt.detection.classes import get_detection_classes
from ppkt.detection.coder import angle_to_bin, bin_to_angle, mean_sizes
from ppkt.detection.dataset import DetScenes, collate_detection
from ppkt.detection.evaluate import BOX_FACES, write_box_ply
from ppkt.detection.loss import inside_boxes, votenet_loss
from ppkt.train.detect import build_detector, finetune_detection, load_detector
from ppkt.train.detect_config import DetectionConfig, validate_detection
from ppkt.train.logging import read_metrics

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = [8, 16, 16, 16, 16, 16, 16, 16]

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


def cube_surface(lo, size, step=0.02):
    """Points on the 5 visible faces (no bottom) of an axis-aligned cuboid with corner `lo` and full `size`."""
    (x0, y0, z0), (dx, dy, dz) = lo, size
    u = np.arange(0, 1.0001, step / max(size))
    a, b = (m.ravel() for m in np.meshgrid(u, u))
    faces = [np.stack([a * dx, b * dy, np.full_like(a, dz)], 1), np.stack([a * dx, np.zeros_like(a), b * dz], 1),
             np.stack([a * dx, np.full_like(a, dy), b * dz], 1), np.stack([np.zeros_like(a), a * dy, b * dz], 1),
             np.stack([np.full_like(a, dx), a * dy, b * dz], 1)]
    return np.concatenate(faces) + [x0, y0, z0]


def tiny_det_scene(folder: Path, seed: int) -> np.ndarray:
    """A 2 m floor with a 0.4 m cube (stored class 0) and a 0.3 x 0.6 x 0.5 m cuboid (class 1); returns its boxes."""
    rng = np.random.default_rng(seed)
    g = np.arange(0, 2.0, 0.02)
    fx, fy = np.meshgrid(g, g)
    parts, boxes = [np.stack([fx.ravel(), fy.ravel(), np.zeros(fx.size)], 1)], []
    colours = [np.tile([120, 120, 110], (fx.size, 1))]
    for cls, size, rgb, (xlo, xhi) in ((0, (0.4, 0.4, 0.4), (200, 40, 40), (0.1, 0.6)), (1, (0.3, 0.6, 0.5), (40, 60, 200), (1.1, 1.5))):
        lo = np.array([rng.uniform(xlo, xhi), rng.uniform(0.1, 1.2), 0.02])
        pts = cube_surface(lo, size)
        parts.append(pts)
        colours.append(np.tile(rgb, (len(pts), 1)))
        boxes.append([*(lo + np.array(size) / 2), *size, 0.0, cls])
    folder.mkdir(parents=True)
    np.save(folder / "coord.npy", np.concatenate(parts).astype(np.float32))
    np.save(folder / "color.npy", np.clip(np.concatenate(colours) + rng.normal(0, 6, (sum(map(len, parts)), 3)), 0, 255).astype(np.uint8))
    np.save(folder / "boxes.npy", np.array(boxes, np.float32))
    return np.array(boxes)


def tiny_det_dataset(root: Path, train: int = 2, val: int = 1) -> Path:
    names = {"train": [f"scene_{i:04d}" for i in range(train)], "val": [f"scene_{i:04d}" for i in range(train, train + val)]}
    (root / "splits").mkdir(parents=True)
    for split, scenes in names.items():
        for name in scenes:
            tiny_det_scene(root / "scenes" / name, int(name[-4:]))
        (root / "splits" / f"{split}.txt").write_text("".join(n + "\n" for n in scenes))
    (root / "detection_classes.json").write_text(json.dumps({"name": "tiny", "names": ["cube", "cuboid"]}))
    return root


def tiny_config(data: Path, out: Path, *extra: str) -> DetectionConfig:
    overrides = [f"data.root={data}", f"data.classes={data}", "data.voxel_size=0.05", f"model.channels={CHANNELS}".replace(" ", ""),
                 "model.num_seeds=128", "model.num_proposals=32", "model.nsample=8", "train.batch_size=2",
                 "train.workers=0", "train.threads=1", "train.log_every=1", "train.eval_every=0", f"train.out_dir={out}", *extra]
    return load_config(ROOT / "configs" / "detection_synthetic.yaml", overrides, DetectionConfig)


def test_heading_bins_round_trip_and_sizes():
    angles = torch.tensor([0.0, 0.3, -0.3, math.pi / 2, math.pi - 0.01, -math.pi + 0.01, 2.0])
    cls, res = angle_to_bin(angles, 12)
    assert cls.tolist() == [0, 1, 11, 3, 6, 6, 4]  # bins of width 30 degrees centred at 0, 30, 60, ...
    assert (res.abs() <= math.pi / 12 + 1e-6).all()
    assert torch.allclose(bin_to_angle(cls, res, 12), angles, atol=1e-6)
    boxes = [np.array([[0, 0, 0, 1, 2, 3, 0, 0], [0, 0, 0, 3, 2, 1, 0, 0]]), np.array([[0, 0, 0, 2, 2, 2, 0, 1]])]
    assert np.allclose(mean_sizes(boxes, 3), [[2, 2, 2], [2, 2, 2], [2, 2, 2]])  # class 2: the mean of all boxes
    assert np.allclose(mean_sizes(boxes[:1], 2)[0], [2, 2, 2])


def test_inside_boxes_agrees_with_points_in_box_and_nms():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-2, 2, (3000, 3))
    boxes = np.array([[0.3, -0.2, 0.1, 1.2, 0.6, 0.8, 0.7], [-1.0, 1.0, 0.0, 0.5, 1.5, 1.0, -2.0]])
    got = inside_boxes(torch.from_numpy(pts), torch.from_numpy(boxes)).numpy()
    assert np.array_equal(got, np.stack([points_in_box(pts, b) for b in boxes], 1))
    # NMS: the second box overlaps the first (IoU 0.6 > 0.25) and is dropped; the far third one stays
    three = np.array([[0, 0, 0, 1, 1, 1, 0], [0.25, 0, 0, 1, 1, 1, 0], [5, 5, 0, 1, 1, 1, 0]], float)
    assert nms_3d(three, np.array([0.9, 0.8, 0.5])).tolist() == [0, 2]
    assert nms_3d(three, np.array([0.9, 0.8, 0.5]), threshold=0.7).tolist() == [0, 1, 2]


def test_crop_keeps_only_boxes_mostly_inside(tmp_path):
    data = tiny_det_dataset(tmp_path / "data", 1, 1)
    full = DetScenes([data / "scenes" / "scene_0000"], data, 0.05, train=True, augment=False)[(0, 0)]
    assert full.boxes.shape == (2, 8)
    for seed in range(6):
        s = DetScenes([data / "scenes" / "scene_0000"], data, 0.05, train=True, augment=False, max_voxels=600)[(0, seed)]
        assert s.coords.shape[0] == 600
        for box in full.boxes:
            inside_all = inside_boxes(full.xyz, box[None])[:, 0].sum()
            inside_kept = inside_boxes(s.xyz, box[None])[:, 0].sum()
            kept = any(torch.equal(box, b) for b in s.boxes)
            assert kept == bool(inside_kept >= 0.5 * inside_all)


def test_training_lowers_the_loss_and_evaluation_writes_its_table(tmp_path, capsys):
    data = tiny_det_dataset(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "run", "train.iterations=30", "data.augment=false", "optim.warmup=0",
                      "optim.lr=0.003", "model.num_heading_bins=1", "eval.axis_aligned=true")
    out = finetune_detection(cfg)
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:10])
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"cube", "cuboid"} and metrics["gt_boxes"] == {"cube": 1, "cuboid": 1}
    assert 0 <= metrics["mAP@0.25"] <= 1 and 0 <= metrics["mAP@0.5"] <= metrics["mAP@0.25"]
    assert "mAP@0.25" in capsys.readouterr().out
    pred = np.load(out / "eval" / "predictions" / "scene_0002.npy")
    assert pred.ndim == 2 and pred.shape[1] == 9 and (np.diff(pred[:, 8]) <= 0).all()
    from plyfile import PlyData

    ply = PlyData.read(str(out / "eval" / "ply" / "scene_0002_gt_boxes.ply"))
    assert len(ply["vertex"]) == 16 and len(ply["face"]) == 24
    # the checkpoint re-evaluates to the same scores through the command
    assert ppkt(["evaluate", "--task", "detection", "--checkpoint", str(out / "checkpoints" / "last.pt"),
                 "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["mAP@0.25"] == pytest.approx(metrics["mAP@0.25"]) and again["iteration"] == 30


def test_resume_ends_with_the_same_weights(tmp_path):
    data = tiny_det_dataset(tmp_path / "data")
    whole = finetune_detection(tiny_config(data, tmp_path / "a", "train.iterations=6", "data.val_split=''"))
    part = tiny_config(data, tmp_path / "b", "train.iterations=6", "data.val_split=''", "train.checkpoint_every=3")
    finetune_detection(part, stop_after=3)
    finetune_detection(part, resume=True)
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_scoring_prediction_files_of_another_system(tmp_path, capsys):
    data = tiny_det_dataset(tmp_path / "data", 1, 2)
    truth = {n: np.load(data / "scenes" / n / "boxes.npy") for n in ("scene_0001", "scene_0002")}
    preds = tmp_path / "preds"
    preds.mkdir()
    # scene_0001: both objects found (score 0.9), plus a false positive cube ranked first; scene_0002: no file
    rows = [[*b[:7], b[7], 0.9] for b in truth["scene_0001"]] + [[5, 5, 0.2, 0.4, 0.4, 0.4, 0, 0, 0.95]]
    np.save(preds / "scene_0001.npy", np.array(rows))
    args = ["evaluate", "--task", "detection", "--predictions", str(preds), "--data", str(data), "--split", "val",
            "--out", str(tmp_path / "out")]
    assert ppkt(args) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # cube: 2 true cubes; ranked FP, TP -> precision 0, 1/2; recall 0, 1/2 -> AP = 1/2 * 1/2 = 0.25
    # cuboid: one TP of 2 true cuboids -> AP = 1/2
    assert m["per_class"]["cube"]["AP@0.25"] == pytest.approx(0.25)
    assert m["per_class"]["cuboid"]["AP@0.25"] == pytest.approx(0.5)
    assert m["mAP@0.25"] == pytest.approx(0.375) and m["mAP@0.5"] == pytest.approx(0.375)
    np.save(preds / "scene_3.npy", np.array(rows))  # named for no scene: scored as nothing, with a warning
    assert ppkt(args) == 0 and "1 file(s) named for no scene of the split, not scored: scene_3.npy" in capsys.readouterr().err
    for bad, problem in ((np.zeros((3, 8)), "expected a (K, 9) array"), (np.full((2, 9), np.nan), "row 0 holds NaN"),
                         (np.array(rows) * [1, 1, 1, -1, 1, 1, 1, 1, 1], "row 0 has a size (dx, dy, dz) <= 0"),
                         (np.array(rows) + [0, 0, 0, 0, 0, 0, 0, 7, 0], "class column holds 7.0")):
        np.save(preds / "scene_0002.npy", bad)
        assert ppkt(args) == 2 and f"scene_0002.npy: {problem}" in capsys.readouterr().err
    (preds / "scene_0001.npy").unlink(), (preds / "scene_0002.npy").unlink()
    assert ppkt(args) == 2  # only files for no scene of the split: nothing to score is an error, not mAP 0
    assert "none of its 1 .npy files is named for a scene of the split (e.g. scene_3.npy" in capsys.readouterr().err


def test_model_from_config_and_wrong_configs(tmp_path):
    data = tiny_det_dataset(tmp_path / "data", 1, 1)
    cfg = tiny_config(data, tmp_path / "run")
    ds = DetScenes([data / "scenes" / "scene_0000"], get_detection_classes(data), 0.05, train=False)
    model = build_detector(cfg, 2, mean_sizes(ds.truth, 2))
    batch = collate_detection([ds[0]])
    out = model(batch.feats, batch.coords, batch.xyz, batch.offsets)
    assert out["center"].shape == (1, 32, 3) and out["size_residuals"].shape == (1, 32, 2, 3)
    terms = votenet_loss(out, batch.boxes, model.mean_size, model.num_heading_bins)
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.vote.parameters())
    with pytest.raises(ConfigError, match="model.num_proposals"):
        validate_detection(tiny_config(data, tmp_path / "x", "model.num_proposals=500"))
    with pytest.raises(ConfigError, match="eval.nms_iou"):
        validate_detection(tiny_config(data, tmp_path / "x", "eval.nms_iou=0"))


def test_box_ply_faces_close_each_box(tmp_path):
    path = write_box_ply(tmp_path / "b.ply", np.array([[0, 0, 0, 1, 2, 3, 0.5, 0, 1.0]]), np.array([[255, 0, 0]], np.uint8))
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    # the written vertices are the box's corners, worked out by hand: centre 0, size (1, 2, 3), heading 0.5 rad
    c, s = np.cos(0.5), np.sin(0.5)
    expected = {(round(x * c - y * s, 5), round(x * s + y * c, 5), z) for x in (-0.5, 0.5) for y in (-1, 1)
                for z in (-1.5, 1.5)}
    v = ply["vertex"]
    written = {(round(float(a), 5), round(float(b), 5), float(z)) for a, b, z in zip(v["x"], v["y"], v["z"])}
    assert written == expected and len(v["x"]) == 8
    # the written faces: 12 triangles whose edges are the 12 box edges and 6 face diagonals (a closed cuboid surface)
    faces = [tuple(f) for f in ply["face"]["vertex_indices"]]
    edges = {tuple(sorted(e)) for f in faces for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    assert len(faces) == 12 and len(edges) == 18
    xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    lengths = sorted(round(float(np.linalg.norm(xyz[a] - xyz[b])), 4) for a, b in edges)
    # the 12 edges of a 1 x 2 x 3 box and one diagonal of each of its 6 faces (two of each face size)
    diagonals = [round(float(np.hypot(p, q)), 4) for p, q in ((1, 2), (1, 3), (2, 3))] * 2
    assert lengths == sorted([1.0] * 4 + [2.0] * 4 + [3.0] * 4 + diagonals)


@pytest.mark.parametrize("name", ["detection_synthetic", "detection_scannet", "detection_sunrgbd"])
def test_shipped_detection_configs_load_and_validate(name):
    cfg = validate_detection(load_config(ROOT / "configs" / f"{name}.yaml", [], DetectionConfig))
    assert get_detection_classes(cfg.data.classes).num_classes == {"synthetic": 9, "scannet18": 18, "sunrgbd10": 10}[cfg.data.classes]
    assert (cfg.model.num_heading_bins == 1) == cfg.eval.axis_aligned


def test_a_segmentation_checkpoint_is_refused_by_name(tmp_path):
    from ppkt.checkpoint import CheckpointError, save_atomic

    path = save_atomic({"format": "ppkt-finetune", "version": 1}, tmp_path / "seg.pt")
    with pytest.raises(CheckpointError, match="ppkt-detection"):
        load_detector(path)


def test_proposals_decode_to_the_boxes_written_out_here():
    from ppkt.detection.predict import proposals_to_boxes

    nh, c, big = 12, 2, 8.0
    mean_size = torch.tensor([[1.0, 2.0, 0.5], [0.4, 0.4, 0.8]])
    out = {"objectness": torch.tensor([[[0.0, big], [0.0, big], [big, 0.0], [0.0, big]]]),  # obj ~1, ~1, ~0, ~1
           "center": torch.tensor([[[1.0, 2.0, 0.5], [1.05, 2.0, 0.5], [5.0, 5.0, 0.5], [-3.0, 0.0, 0.4]]]),
           "heading_scores": torch.zeros(1, 4, nh), "heading_residuals": torch.zeros(1, 4, nh),
           "size_scores": torch.zeros(1, 4, c), "size_residuals": torch.zeros(1, 4, c, 3), "sem_scores": torch.zeros(1, 4, c)}
    out["heading_scores"][0, :, 3] = big  # bin 3: 90 degrees, plus a residual of 0.1 rad
    out["heading_residuals"][0, :, 3] = 0.1
    out["size_scores"][0, :, 0] = big
    out["size_residuals"][0, :, 0] = torch.tensor([0.2, -0.5, 0.1])
    out["sem_scores"][0, :3, 0] = big  # proposals 0-2: class 0; proposal 3: class 1
    out["sem_scores"][0, 3, 1] = big
    boxes = proposals_to_boxes(out, mean_size, nh, min_score=0.05, nms_iou=0.25)[0]
    # proposal 1 duplicates proposal 0 (same box 5 cm away: suppressed), proposal 2 has objectness ~0 (dropped)
    assert len(boxes) == 2
    p = 1 / (1 + math.exp(-big))  # softmax of (0, big)
    want0 = [1.0, 2.0, 0.5, 1.2, 1.5, 0.6, math.pi / 2 + 0.1, 0, p * p]  # size = mean of class 0 + residual
    assert np.allclose(sorted(boxes.tolist(), key=lambda r: r[7])[0], want0, atol=1e-4)
    assert boxes[:, 7].tolist() == [0.0, 1.0] or boxes[:, 7].tolist() == [1.0, 0.0]
    assert len(proposals_to_boxes(out, mean_size, nh, min_score=0.0, nms_iou=0.25)[0]) == 3  # 2 now kept


def test_per_class_listing_and_one_bin_heading_targets():
    from ppkt.detection.loss import box_heading
    from ppkt.detection.predict import proposals_to_boxes

    out = {"objectness": torch.tensor([[[0.0, 2.0], [0.0, 1.0]]]), "center": torch.tensor([[[0.0, 0, 0], [3.0, 0, 0]]]),
           "heading_scores": torch.zeros(1, 2, 1), "heading_residuals": torch.zeros(1, 2, 1),
           "size_scores": torch.zeros(1, 2, 3), "size_residuals": torch.zeros(1, 2, 3, 3),
           "sem_scores": torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]]])}
    boxes = proposals_to_boxes(out, torch.ones(3, 3), 1, min_score=0.0, per_class=True)[0]
    obj = torch.softmax(out["objectness"][0], 1)[:, 1]
    sem = torch.softmax(out["sem_scores"][0], 1)
    want = sorted((float(obj[i] * sem[i, c]), c) for i in range(2) for c in range(3))[::-1]
    assert [(round(s, 6), int(c)) for s, c in zip(boxes[:, 8], boxes[:, 7])] == [(round(s, 6), c) for s, c in want]
    # one heading bin (axis-aligned boxes): a mirrored heading-0 box (heading pi) is the same box, target 0
    angles = torch.tensor([math.pi, -math.pi, math.pi / 2 + 0.1, 0.2])
    assert torch.allclose(box_heading(angles, 1), torch.tensor([0.0, 0.0, -math.pi / 2 + 0.1, 0.2]), atol=1e-6)
    assert torch.equal(box_heading(angles, 12), angles)


def test_augmentation_without_the_y_mirror_keeps_y():
    from ppkt.detection.augment import random_augment

    rng = np.random.default_rng(0)
    pts, boxes = rng.uniform(-2, 2, (50, 3)), np.array([[0.5, 0.7, 0.2, 1, 1, 1, 0.3]])
    for seed in range(20):
        p, b = random_augment(pts, boxes, np.random.default_rng(seed), rotation=0.0, scale_range=(1, 1), mirror_y=False)
        assert np.allclose(p[:, 1], pts[:, 1]) and np.allclose(b[:, 1], boxes[:, 1])


def test_predict_boxes_on_a_scan_equal_the_evaluation_path(tmp_path):
    """`ppkt predict` with a detector: the boxes of a PLY scan equal those of the evaluation's own inputs (DetScenes),
    in the scan's units when it is in millimetres."""
    from ppkt.data.ply import write_ply
    from ppkt.detection.dataset import DetScenes, collate_detection
    from ppkt.detection.predict import proposals_to_boxes

    data = tiny_det_dataset(tmp_path / "data")
    out = finetune_detection(tiny_config(data, tmp_path / "run", "train.iterations=4", "data.val_split=''"))
    ckpt = out / "checkpoints" / "last.pt"
    scene = data / "scenes" / "scene_0002"
    coord, color = np.load(scene / "coord.npy"), np.load(scene / "color.npy")
    write_ply(tmp_path / "room.ply", coord, color)
    np.save(tmp_path / "room_mm.npy", np.c_[coord * 1000, color])
    assert ppkt(["predict", "--checkpoint", str(ckpt), str(tmp_path / "room.ply"), "--min-score", "0", "--out",
                 str(tmp_path / "p"), "--quiet"]) == 0
    boxes = np.load(tmp_path / "p" / "room.boxes.npy")
    model, classes, cfg, _ = load_detector(ckpt)
    dataset = DetScenes([scene], classes, cfg.data.voxel_size, train=False)
    batch = collate_detection([dataset[0]])
    with torch.no_grad():
        expected = proposals_to_boxes(model(batch.feats, batch.coords, batch.xyz, batch.offsets), model.mean_size,
                                      model.num_heading_bins, 0.0, cfg.eval.nms_iou, cfg.eval.axis_aligned)[0]
    assert boxes.shape == expected.shape and boxes.shape[1] == 9 and len(boxes) > 0
    assert np.allclose(boxes, expected, atol=1e-4)
    from plyfile import PlyData

    assert len(PlyData.read(str(tmp_path / "p" / "room.boxes.ply"))["vertex"]) == 8 * len(boxes)
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["task"] == "detection" and sum(summary["scans"][0]["boxes_per_class"].values()) == len(boxes)
    from ppkt.commands.info import describe

    text = "\n".join(describe(ckpt))
    assert "ppkt detection checkpoint" in text and "iteration: 4 of 4" in text and "classes: 2 (tiny): cube, cuboid" in text
    assert (tmp_path / "p" / "room.png").stat().st_size > 0
    assert ppkt(["predict", "--checkpoint", str(ckpt), str(tmp_path / "room_mm.npy"), "--scale", "0.001",
                 "--min-score", "0", "--out", str(tmp_path / "mm"), "--quiet", "--no-preview"]) == 0
    mm = np.load(tmp_path / "mm" / "room_mm.boxes.npy")
    assert mm.shape == boxes.shape and np.allclose(mm[:, :6], boxes[:, :6] * 1000, atol=0.5)
    # the box PLY is in the same units as the boxes file: its first box's corners are those of mm[0]
    from ppkt.detection.boxes import corners

    v = PlyData.read(str(tmp_path / "mm" / "room_mm.boxes.ply"))["vertex"]
    assert np.allclose(np.stack([v["x"], v["y"], v["z"]], 1)[:8], corners(mm[0, :7]), atol=0.5)
    # a scan cut into tiles: each object once (no two boxes of a class overlap past the NMS threshold), centres in it
    from ppkt.detection.boxes import iou_3d
    from ppkt.predict.detect import detect_scan
    from ppkt.predict.scan import read_scan

    scan = read_scan(tmp_path / "room.ply", cfg.data.voxel_size)
    tiled = detect_scan(model, cfg.eval, scan, cfg.data.voxel_size, 0.0, tile=0.5, margin=0.0)  # 0.8 m cores
    assert tiled.tiles > 1 and len(tiled.boxes)
    assert (tiled.boxes[:, :2] >= coord.min(0)[:2] - 0.5).all() and (tiled.boxes[:, :2] <= coord.max(0)[:2] + 0.5).all()
    for c in np.unique(tiled.boxes[:, 7]):
        of_c = tiled.boxes[tiled.boxes[:, 7] == c]
        for i in range(len(of_c)):
            for j in range(i + 1, len(of_c)):
                assert float(np.asarray(iou_3d(of_c[i:i + 1, :7], of_c[j:j + 1, :7])).max()) <= cfg.eval.nms_iou + 1e-6


def test_a_geometry_only_detector_trains_and_reads_a_scan_without_colour(tmp_path, capsys):
    from ppkt.data.ply import write_ply

    data = tiny_det_dataset(tmp_path / "data")
    out = finetune_detection(tiny_config(data, tmp_path / "run", "train.iterations=2", "data.features=normal"))
    model, _, cfg, _ = load_detector(out / "checkpoints" / "last.pt")
    assert cfg.data.features == "normal" and model.backbone.in_channels == 3
    coord = np.load(data / "scenes" / "scene_0002" / "coord.npy")
    np.save(tmp_path / "bare.npy", coord)  # points only
    assert ppkt(["predict", "--checkpoint", str(out / "checkpoints" / "last.pt"), str(tmp_path / "bare.npy"),
                 "--min-score", "0", "--out", str(tmp_path / "p"), "--quiet", "--no-preview"]) == 0
    assert np.load(tmp_path / "p" / "bare.boxes.npy").shape[1] == 9
    colour = finetune_detection(tiny_config(data, tmp_path / "colour", "train.iterations=1", "data.val_split=''"))
    assert ppkt(["predict", "--checkpoint", str(colour / "checkpoints" / "last.pt"), str(tmp_path / "bare.npy"),
                 "--out", str(tmp_path / "q"), "--quiet"]) == 2
    assert "reads colour" in capsys.readouterr().err
