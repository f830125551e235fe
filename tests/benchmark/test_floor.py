"""The floors on hand-made scenes: colour that decides the class (mIoU 100) and colour that cannot (mIoU by hand)."""
import numpy as np
import pytest

from ppkt.benchmark.floor import LookupTable, NearestNeighbours, grid_majority, score_floor
from ppkt.data.scenes import ClassSet

CLASSES = ClassSet("two", ("red thing", "blue thing"), "segment")


def write_scene(folder, coord, color, segment):
    folder.mkdir(parents=True)
    np.save(folder / "coord.npy", np.asarray(coord, np.float32))
    np.save(folder / "color.npy", np.asarray(color, np.uint8))
    np.save(folder / "segment.npy", np.asarray(segment, np.int64))
    return folder


def colour_scene(rng, n=400):
    """Red points are class 0, blue points class 1, at random heights between 0 and 2 m."""
    cls = rng.integers(0, 2, n)
    coord = np.c_[rng.uniform(0, 4, (n, 2)), rng.uniform(0, 2, n)]
    color = np.where(cls[:, None] == 0, [[200, 10, 10]], [[10, 10, 200]])
    return coord, color, cls


@pytest.mark.parametrize("model", [LookupTable(2), NearestNeighbours(2, k=3)])
def test_colour_decides_the_class(tmp_path, model):
    rng = np.random.default_rng(0)
    model.fit([colour_scene(rng)])
    scene = write_scene(tmp_path / "s", *colour_scene(rng))
    assert score_floor(model, [scene], CLASSES)["miou"] == pytest.approx(1.0)


def test_colour_and_height_cannot_decide(tmp_path):
    # training: grey points at height 0.05 m, 3 of class 0 and 1 of class 1 -> the table says class 0 for grey at
    # that height. Test scene: 6 grey points there, 2 of class 0 and 4 of class 1: all predicted 0.
    # class 0: TP 2, FP 4, FN 0 -> IoU 2/6; class 1: TP 0, FN 4 -> IoU 0; mIoU = (1/3 + 0) / 2 = 1/6
    grey = [[128, 128, 128]]
    train = (np.array([[0, 0, 0.05]] * 4, float), np.repeat(grey, 4, 0), np.array([0, 0, 0, 1]))
    table = LookupTable(2).fit([train])
    scene = write_scene(tmp_path / "s", [[1, 1, 0.05]] * 6, np.repeat(grey, 6, 0), [0, 0, 1, 1, 1, 1])
    s = score_floor(table, [scene], CLASSES)
    assert s["miou"] == pytest.approx(1 / 6)
    assert s["per_class_iou"] == {"red thing": pytest.approx(1 / 3), "blue thing": pytest.approx(0.0)}


def test_lookup_falls_back_to_colour_then_height_then_majority():
    # class 0 red at 0.05 m, class 1 blue at 1.05 m, 3 points of class 1 in all -> majority class 1
    coord = np.array([[0, 0, 0.05], [0, 0, 1.05], [0, 0, 1.05], [0, 0, 1.05]], float)
    color = np.array([[250, 0, 0], [0, 0, 250], [0, 0, 250], [0, 0, 250]])
    table = LookupTable(2).fit([(coord, color, np.array([0, 1, 1, 1]))])
    pred = table.predict(np.array([[5, 5, 3.0], [5, 5, 1.02], [5, 5, 3.0]]),
                         np.array([[250, 0, 0], [60, 250, 60], [60, 250, 60]]))
    # red at an unseen height -> its colour's class 0; green at 1.02 m -> the height cell's class 1; green at an
    # unseen height -> the overall majority 1
    assert pred.tolist() == [0, 1, 1]


def test_grid_majority_keeps_one_point_per_cell_with_its_majority():
    coord = np.array([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.03, 0.01, 0.0], [0.5, 0.5, 0.5], [0.9, 0.9, 0.9]])
    labels = np.array([1, 1, 0, 0, -1])
    c, _, l = grid_majority(coord, np.zeros((5, 3)), labels, 0.08, 2)
    assert len(c) == 2 and sorted(l.tolist()) == [0, 1]  # the unlabelled point's cell is dropped
