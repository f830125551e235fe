"""`ppkt prepare sunrgbd` on a tiny VoteNet-style sunrgbd_trainval folder written by the test: points, boxes and
their heading convention, calib, splits, errors."""
import json

import numpy as np
import pytest
from scipy.io import savemat

from ppkt.cli import main as cli_main
from ppkt.data.scenes import SceneError, list_scenes
from boxes_reference import points_in_box
from ppkt.prepare.sunrgbd import SUNRGBD_CLASSES, convert_sample, find_samples, read_labels

ANGLE = np.deg2rad(30.0)
CENTRE = np.array([1.0, 3.0, 0.5])


def rotz(points, angle):
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T  # counter-clockwise about +z


def grid(xs, ys, zs):
    return np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1).reshape(-1, 3)


# a 2 x 1 x 1 m chair turned 30 degrees counter-clockwise: its points in its own frame (x along the 2 m side, 1 mm
# inside the faces: the boxes are stored as float32) ...
INSIDE = rotz(grid(np.linspace(-0.999, 0.999, 9), np.linspace(-0.499, 0.499, 5), np.linspace(-0.499, 0.499, 3)),
              ANGLE) + CENTRE
# ... and points just outside its two long sides (local y = +-0.55) and its two short ends (local x = +-1.05)
OUTSIDE = rotz(np.concatenate([grid(np.linspace(-0.9, 0.9, 7), [-0.55, 0.55], [0.0]),
                               grid([-1.05, 1.05], [0.0], [0.0])]), ANGLE) + CENTRE
# VoteNet's label line: 2D box, centre, half sizes w = 0.5, l = 1, h = 0.5, orientation of the l side (cos 30, sin 30)
CHAIR = f"chair 10 20 30 40 {CENTRE[0]} {CENTRE[1]} {CENTRE[2]} 0.5 1 0.5 {np.cos(ANGLE):.9f} {np.sin(ANGLE):.9f}"
TABLE = "table 1 2 3 4 -1.5 2.0 0.4 0.6 0.8 0.4 1 0"  # axis-aligned: 1.6 (x) x 1.2 (y) x 0.8 m
LAMP = "lamp 1 2 3 4 0 1 1 0.1 0.1 0.2 1 0"  # not one of the 10 classes: dropped
RTILT = np.array([[1.0, 0.0, 0.0], [0.0, 0.98, -0.2], [0.0, 0.2, 0.98]])
K = np.array([[529.5, 0.0, 365.0], [0.0, 529.5, 265.0], [0.0, 0.0, 1.0]])


def write_sample(root, sample_id, points, labels, calib=True, colors=None):
    stem = f"{sample_id:06d}"
    for sub in ("depth", "label", "calib"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rgb = np.tile([0.2, 0.6, 1.0], (len(points), 1)) if colors is None else colors
    savemat(str(root / "depth" / f"{stem}.mat"), {"instance": np.concatenate([points, rgb], 1)})
    (root / "label" / f"{stem}.txt").write_text("".join(line + "\n" for line in labels))
    if calib:  # column-major, as MATLAB's dlmwrite(Rtilt(:)') writes it
        (root / "calib" / f"{stem}.txt").write_text(" ".join(f"{v:g}" for v in RTILT.T.reshape(-1)) + "\n"
                                                     + " ".join(f"{v:g}" for v in K.T.reshape(-1)) + "\n")


def write_trainval(root):
    """Ids 1 and 2 (train), 5051 (val); returns root."""
    colors = np.random.default_rng(0).random((len(INSIDE) + len(OUTSIDE), 3))
    write_sample(root, 1, np.concatenate([INSIDE, OUTSIDE]), [CHAIR, LAMP, TABLE], colors=colors)
    write_sample(root, 2, np.array([[0.0, 1.0, 0.0], [0.5, 2.0, 1.5]]), [], calib=False)  # no objects, no calib
    write_sample(root, 5051, np.array([[1.0, 1.0, 1.0]]), ["bed 1 2 3 4 0 2 0.5 1 1.1 0.5 0 1"])
    (root / "train_data_idx.txt").write_text("1\n2\n")
    (root / "val_data_idx.txt").write_text("5051\n")
    return root


def test_sample_converts_to_points_colors_calib_and_boxes(tmp_path):
    root = write_trainval(tmp_path / "sunrgbd_trainval")
    info = convert_sample(root / "depth" / "000001.mat", tmp_path / "out")
    assert info["boxes"] == 2 and info["dropped_objects"] == 1 and info["calib"] and not info["skipped"]
    s = tmp_path / "out" / "scenes" / "000001"
    coord, color = np.load(s / "coord.npy"), np.load(s / "color.npy")
    assert coord.dtype == np.float32 and coord.shape == (len(INSIDE) + len(OUTSIDE), 3)
    assert np.allclose(coord, np.concatenate([INSIDE, OUTSIDE]), atol=1e-6)
    colors = np.random.default_rng(0).random((len(coord), 3))
    assert color.dtype == np.uint8 and np.array_equal(color, np.round(colors * 255))
    boxes = np.load(s / "boxes.npy")
    assert boxes.dtype == np.float32 and boxes.shape == (2, 8)
    chair = [*CENTRE, 2.0, 1.0, 1.0, ANGLE, SUNRGBD_CLASSES.index("chair")]
    table = [-1.5, 2.0, 0.4, 1.6, 1.2, 0.8, 0.0, SUNRGBD_CLASSES.index("table")]
    assert SUNRGBD_CLASSES.index("chair") == 3 and SUNRGBD_CLASSES.index("table") == 1
    assert np.allclose(boxes, [chair, table], atol=1e-6)
    assert np.allclose(np.load(s / "rtilt.npy"), RTILT) and np.allclose(np.load(s / "intrinsics.npy"), K)
    assert convert_sample(root / "depth" / "000001.mat", tmp_path / "out")["skipped"]  # a rerun skips it


def test_heading_turns_the_long_side_counter_clockwise_as_the_detection_boxes_expect(tmp_path):
    root = write_trainval(tmp_path / "sunrgbd_trainval")
    convert_sample(root / "depth" / "000001.mat", tmp_path / "out")
    chair = np.load(tmp_path / "out" / "scenes" / "000001" / "boxes.npy")[0].astype(np.float64)
    assert points_in_box(INSIDE, chair).all()
    assert not points_in_box(OUTSIDE, chair).any()
    mirrored = chair.copy()
    mirrored[6] = -chair[6]  # VoteNet's clockwise heading read as ours: the points no longer fit
    assert not points_in_box(INSIDE, mirrored).all()


def test_empty_labels_give_no_boxes_and_a_missing_calib_is_fine(tmp_path):
    root = write_trainval(tmp_path / "sunrgbd_trainval")
    info = convert_sample(root / "depth" / "000002.mat", tmp_path / "out")
    s = tmp_path / "out" / "scenes" / "000002"
    assert info["boxes"] == 0 and not info["calib"] and np.load(s / "boxes.npy").shape == (0, 8)
    assert not (s / "rtilt.npy").exists()


def test_bad_inputs_raise_errors_naming_the_file(tmp_path):
    root = write_trainval(tmp_path / "sunrgbd_trainval")
    (root / "label" / "000009.txt").write_text(TABLE + "\n" + "chair 1 2 3 4 0 1 1 0.5 0.5 0.5 1\n")
    with pytest.raises(SceneError, match=r"000009\.txt, line 2: expected 13 fields .*got 12"):
        read_labels(root / "label" / "000009.txt")
    (root / "label" / "000009.txt").write_text("chair 1 2 3 4 0 1 1 0.5 0.5 0.5 1 x\n")
    with pytest.raises(SceneError, match=r"000009\.txt, line 1: .*finite numbers"):
        read_labels(root / "label" / "000009.txt")
    savemat(str(root / "depth" / "000010.mat"), {"points": np.zeros((3, 6))})
    with pytest.raises(SceneError, match=r"000010\.mat: no variable 'instance'"):
        convert_sample(root / "depth" / "000010.mat", tmp_path / "out")
    savemat(str(root / "depth" / "000011.mat"), {"instance": np.zeros((3, 4))})
    with pytest.raises(SceneError, match=r"000011\.mat: 'instance' must be an \(N, >=6\) array"):
        convert_sample(root / "depth" / "000011.mat", tmp_path / "out")
    savemat(str(root / "depth" / "000012.mat"), {"instance": np.array([[0, 0, np.nan, 0, 0, 0], [0, 0, 0, 0, 0, 0]])})
    with pytest.raises(SceneError, match=r"000012\.mat: 1 points hold NaN"):
        convert_sample(root / "depth" / "000012.mat", tmp_path / "out")
    (root / "calib" / "000001.txt").write_text("1 0 0 0 1 0 0 0 1\n1 2 3\n")
    with pytest.raises(SceneError, match=r"calib.000001\.txt, line 2: expected K as 9 numbers"):
        convert_sample(root / "depth" / "000001.mat", tmp_path / "out")
    assert not (tmp_path / "out" / "scenes" / "000001").exists()  # a failed sample leaves no scene folder
    with pytest.raises(SceneError, match="not a folder"):
        find_samples(tmp_path / "nowhere")
    (root / "val_data_idx.txt").unlink()
    with pytest.raises(SceneError, match=r"val_data_idx\.txt: file not found"):
        find_samples(root)


def test_cli_writes_scenes_splits_and_classes_and_reports_missing_samples(tmp_path, capsys):
    root = write_trainval(tmp_path / "sunrgbd_trainval")
    out = tmp_path / "out"
    args = ["prepare", "sunrgbd", str(root), "--out", str(out), "--workers", "2"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "3 samples: 3 converted, 0 already done, 0 failed" in printed
    # 000002 holds none of the 10 classes: converted, but left out of the split (as VoteNet), unless --keep-empty
    assert "split train: 1 samples without any of the 10 classes left out" in printed
    assert (out / "splits" / "train.txt").read_text() == "000001\n"
    assert cli_main([*args, "--keep-empty"]) == 0
    assert (out / "splits" / "train.txt").read_text() == "000001\n000002\n"
    assert (out / "splits" / "val.txt").read_text() == "005051\n"
    assert [p.name for p in list_scenes(out, "train")] == ["000001", "000002"]
    assert [p.name for p in list_scenes(out, "val")] == ["005051"]
    assert json.loads((out / "detection_classes.json").read_text()) == {"name": "sunrgbd10", "names": list(SUNRGBD_CLASSES)}
    bed = np.load(out / "scenes" / "005051" / "boxes.npy")
    assert np.allclose(bed, [[0, 2, 0.5, 2.2, 2.0, 1.0, np.pi / 2, 0]], atol=1e-6)
    assert cli_main(args) == 0 and "0 converted, 3 already done" in capsys.readouterr().out
    # --limit: the first id of each split
    assert cli_main(["prepare", "sunrgbd", str(root), "--out", str(tmp_path / "few"), "--limit", "1"]) == 0
    assert (tmp_path / "few" / "splits" / "train.txt").read_text() == "000001\n"
    assert sorted(p.name for p in (tmp_path / "few" / "scenes").iterdir()) == ["000001", "005051"]
    # an id without its depth file and one without its label file: failures, left out of the split
    (root / "val_data_idx.txt").write_text("5051\n7\n8\n")
    write_sample(root, 8, np.zeros((1, 3)), [])
    (root / "label" / "000008.txt").unlink()
    assert cli_main(args) == 1
    printed = capsys.readouterr().out
    assert "000007.mat: file not found" in printed and "000008.txt: file not found" in printed
    assert "split val: 2 of 3 listed samples were not converted" in printed
    assert (out / "splits" / "val.txt").read_text() == "005051\n"
    assert cli_main(["prepare", "sunrgbd", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err
