"""3D IoU of hand-made boxes and AP of hand-made detections against values computed by hand."""
import math

import numpy as np
import pytest

from ppkt.detection.ap import average_precision, evaluate_detections
from boxes_reference import points_in_box
from ppkt.detection.boxes import corners, iou_3d


def box(cx=0.0, cy=0.0, cz=0.0, dx=2.0, dy=2.0, dz=2.0, h=0.0):
    return [cx, cy, cz, dx, dy, dz, h]


def test_axis_aligned_iou():
    # shifted by half a side: intersection 1 x 2 x 2 = 4, union 8 + 8 - 4 = 12
    assert iou_3d([box()], [box(cx=1.0)])[0, 0] == pytest.approx(1 / 3)
    assert iou_3d([box()], [box(cz=1.0)])[0, 0] == pytest.approx(1 / 3)
    assert iou_3d([box()], [box(cx=3.0)])[0, 0] == 0.0  # apart
    # a 1 x 1 x 1 box inside the 2 x 2 x 2 one: 1 / 8
    assert iou_3d([box()], [box(dx=1, dy=1, dz=1)])[0, 0] == pytest.approx(1 / 8)
    # (K, 6) boxes are axis-aligned
    assert iou_3d([[0, 0, 0, 2, 2, 2]], [[1, 0, 0, 2, 2, 2]])[0, 0] == pytest.approx(1 / 3)


def test_rotated_iou():
    # a 2 x 2 square and the same square turned by 45 degrees: a regular octagon of area 8 (sqrt 2 - 1); the
    # IoU, (8 sqrt2 - 8) / (16 - 8 sqrt2), is 1 / sqrt 2 (the same for any height)
    got = iou_3d([box(dz=1.0)], [box(dz=1.0, h=math.pi / 4)])
    assert got[0, 0] == pytest.approx(1 / math.sqrt(2), rel=1e-9)
    # turning by 90 degrees gives the same square; axis-aligned IoU ignores headings
    assert iou_3d([box(dx=2, dy=1)], [box(dx=1, dy=2, h=math.pi / 2)])[0, 0] == pytest.approx(1.0)
    assert iou_3d([box(dx=2, dy=1)], [box(dx=2, dy=1, h=0.3)], axis_aligned=True)[0, 0] == pytest.approx(1.0)
    # a 4 x 1 plank and the same plank turned 90 degrees about the same centre: a 1 x 1 cross, 1 / (4 + 4 - 1)
    assert iou_3d([box(dx=4, dy=1, dz=1)], [box(dx=4, dy=1, dz=1, h=math.pi / 2)])[0, 0] == pytest.approx(1 / 7)


def test_corners_and_inside():
    b = np.array(box(cx=1.0, dx=2.0, dy=1.0, dz=1.0, h=math.pi / 2))  # x side along world y
    c = corners(b)
    assert np.allclose(c[:, 0].min(), 0.5) and np.allclose(c[:, 0].max(), 1.5)
    assert np.allclose(c[:, 1].min(), -1.0) and np.allclose(c[:, 1].max(), 1.0)
    assert points_in_box(np.array([[1.0, 0.9, 0.0], [1.9, 0.0, 0.0]]), b).tolist() == [True, False]


def test_average_precision_written_out():
    # ranked: a false positive first, two hits, a duplicate; 3 objects (one never found)
    # precision 0, 1/2, 2/3, 2/4; recall 0, 1/3, 2/3, 2/3; envelope 2/3, 2/3, 2/3, 1/2 -> AP = 2 * (1/3) (2/3) = 4/9
    assert average_precision([0, 1, 1, 0], [0.9, 0.8, 0.7, 0.6], 3) == pytest.approx(4 / 9)
    assert average_precision([1, 1], [0.5, 0.4], 2) == pytest.approx(1.0)
    assert average_precision([], [], 2) == 0.0


def test_evaluate_detections():
    truths = {"s1": np.array([box() + [0], box(cx=5) + [0]]), "s2": np.array([box(cy=4) + [0], box(cz=9) + [2]]),
              "s3": np.zeros((0, 8))}
    preds = {"s1": np.array([box(cx=20) + [0, 0.9],    # nothing there: false positive, ranked first
                             box(cx=0.1) + [0, 0.8],   # object 1 of s1 (IoU 0.905)
                             box(cx=-0.1) + [0, 0.6],  # object 1 again: a duplicate, false positive
                             box() + [1, 0.95]]),      # class 1 has no object: left out of the mean
             "s2": np.array([box(cy=4.2) + [0, 0.7]])}  # s2's class-0 object (IoU 0.818); s1's second one missed
    out = evaluate_detections(preds, truths, ["chair", "table", "lamp"], thresholds=(0.25, 0.85))
    assert out["per_class"]["chair"]["AP@0.25"] == pytest.approx(4 / 9)
    assert out["per_class"]["table"]["AP@0.25"] is None and out["per_class"]["lamp"]["AP@0.25"] == 0.0
    assert out["mAP@0.25"] == pytest.approx((4 / 9 + 0.0) / 2)
    # at IoU 0.85 only the s1 hit counts: FP, TP, FP, FP -> precision envelope 1/2 at recall 1/3: AP = 1/6
    assert out["per_class"]["chair"]["AP@0.85"] == pytest.approx(1 / 6)
    assert out["gt_boxes"] == {"chair": 3, "table": 0, "lamp": 1}
