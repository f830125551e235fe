"""Evaluation pieces on hand-made data: scores from a confusion matrix and their table, nearest-voxel back-assignment,
PLY and PNG files."""
import json

import numpy as np
import pytest
import torch

from ppkt.geometry.voxelize import voxelize
from ppkt.train.evaluate import back_assign, save_confusion_png, write_json, write_ply
from ppkt.train.metrics import confusion_matrix, format_iou_table, segmentation_metrics

NAMES = ["floor", "box", "cylinder", "lamp"]
# rows = truth. floor: 3 right, 1 called box; box: 2 right, 2 called cylinder; cylinder and lamp never occur,
# cylinder is predicted twice (IoU 0), lamp neither occurs nor is predicted (left out of the means).
CONF = [[3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_scores_of_a_hand_made_confusion_matrix():
    s = segmentation_metrics(torch.tensor(CONF), NAMES)
    assert s["per_class_iou"] == {"floor": 3 / 4, "box": 2 / 5, "cylinder": 0.0, "lamp": None}
    assert s["per_class_acc"] == {"floor": 3 / 4, "box": 2 / 4, "cylinder": None, "lamp": None}
    assert s["miou"] == pytest.approx((3 / 4 + 2 / 5 + 0) / 3)
    assert s["macc"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert s["allacc"] == pytest.approx(5 / 8)
    assert s["count"] == 8 and s["confusion_matrix"] == CONF and s["class_names"] == NAMES
    table = format_iou_table({**s, "scenes": 1, "split": "val"})
    lines = table.splitlines()
    assert lines[0].split() == ["id", "class", "IoU", "%", "acc", "%", "points"]
    assert lines[2].split() == ["1", "box", "40.00", "50.00", "4"]  # IoU 2/5, acc 2/4, 4 labelled points
    assert lines[3].split() == ["2", "cylinder", "0.00", "n/a", "0"]
    assert lines[-1] == "mIoU 38.33  mAcc 62.50  allAcc 62.50  (1 scenes, 8 labelled points, split val)"
    # 2D metrics say pixels; the unit can also be given
    assert format_iou_table({**s, "frames": 3}).splitlines()[-1].endswith("(3 frames, 8 labelled pixels, split ?)")
    assert format_iou_table(s, unit="pixels").splitlines()[0].endswith("pixels")


def test_table_of_metrics_stored_under_the_old_2d_names():
    """Teacher checkpoints written before the shared schema hold mean_iou / pixel_accuracy / per_class_accuracy /
    pixels; the table reads them (mAcc recomputed from the per-class accuracies)."""
    s = segmentation_metrics(torch.tensor(CONF), NAMES)
    old = {"pixel_accuracy": s["allacc"], "mean_iou": s["miou"], "per_class_iou": s["per_class_iou"],
           "per_class_accuracy": s["per_class_acc"], "pixels": s["count"], "split": "val", "frames": 2,
           "class_names": NAMES, "confusion_matrix": CONF}
    assert format_iou_table(old) == format_iou_table({**s, "split": "val", "frames": 2})


def test_ignored_points_do_not_count():
    label = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, -1, -1, -1])
    pred = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 0, 2])  # the ignored points' predictions must not matter
    conf = confusion_matrix(pred, label, 4, ignore_index=-1)
    assert conf.tolist() == CONF
    assert segmentation_metrics(conf, NAMES)["allacc"] == pytest.approx(5 / 8)


def test_back_assignment_gives_every_point_its_voxels_prediction():
    points = torch.tensor([[0.01, 0.02, 0.03], [0.09, 0.0, 0.05], [0.15, 0.01, 0.0], [0.12, 0.08, 0.02],
                           [0.31, 0.32, 0.33], [0.39, 0.30, 0.36], [0.05, 0.05, 0.05]])
    vox = voxelize(points, 0.1)
    assert vox.num_voxels == 3
    # predict each voxel's class from its own coordinates: (0,0,0) -> 4, (1,0,0) -> 7, (3,3,3) -> 2
    table = {(0, 0, 0): 4, (1, 0, 0): 7, (3, 3, 3): 2}
    voxel_pred = torch.tensor([table[tuple(c)] for c in vox.coords.tolist()])
    assert back_assign(voxel_pred, vox.point_to_voxel).tolist() == [4, 4, 7, 7, 2, 2, 4]
    # by hand, independent of voxelize: point 0 in voxel 2, points 1-2 in voxel 0, point 3 in voxel 1
    assert back_assign(torch.tensor([5, 6, 9]), torch.tensor([2, 0, 0, 1])).tolist() == [9, 5, 5, 6]
    with pytest.raises(ValueError, match="index the 3 voxels"):
        back_assign(torch.tensor([5, 6, 9]), torch.tensor([0, 3]))


def read_ply(path):
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    assert ply.byte_order == "<" and not ply.text
    return ply["vertex"].data


def test_ply_round_trip_and_confusion_png(tmp_path):
    xyz = np.array([[0.0, 1.0, 2.0], [-1.5, 0.25, 3.0]])
    rgb = np.array([[255, 0, 0], [0, 128, 255]], dtype=np.uint8)
    write_ply(tmp_path / "a.ply", xyz, rgb, pred=np.array([3, 1]), label=np.array([-1, 1]))
    rows = read_ply(tmp_path / "a.ply")
    assert np.allclose(np.stack([rows["x"], rows["y"], rows["z"]], 1), xyz)
    assert rows["red"].tolist() == [255, 0] and rows["blue"].tolist() == [0, 255]
    assert rows["pred"].tolist() == [3, 1] and rows["label"].tolist() == [-1, 1]
    png = save_confusion_png(torch.tensor(CONF), NAMES, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    write_json(tmp_path / "m.json", {"miou": 0.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"miou": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply", "c.png", "m.json"]  # no temp files left
