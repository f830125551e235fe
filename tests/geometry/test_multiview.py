"""Multi-view aggregation of 2D predictions onto 3D points: the depth test on hand-made geometry, and a perfect 2D
predictor (the rendered labels) on a synthetic scene gives the scene's 3D labels except near occlusion edges."""
import numpy as np
import pytest
import torch

from ppkt.data.frames import open_frame_folder
from ppkt.data.labels2d import read_label
from ppkt.data.scenes import get_class_set, load_scene
from ppkt.geometry.multiview import aggregate_views, visible_pixels, vote
from ppkt.synthetic.dataset import write_dataset

K = torch.tensor([[100.0, 0.0, 20.0], [0.0, 100.0, 15.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_depth_test_on_a_wall():
    depth = torch.full((30, 40), 2.0)  # a wall 2 m in front of a camera at the origin looking along +z
    depth[0, 0] = 0.0  # a pixel without measurement
    points = torch.tensor([[0.0, 0.0, 2.0],     # on the wall, at pixel (u, v) = (20, 15)
                           [0.0, 0.0, 3.0],     # behind the wall: occluded
                           [0.0, 0.0, 2.08],    # within the 0.1 m tolerance
                           [0.5, 0.0, 2.0],     # u = 45: outside the 40-pixel-wide image
                           [0.0, 0.0, -2.0],    # behind the camera
                           [-0.4, -0.3, 2.0],   # pixel (0, 0): no depth there
                           [0.1, 0.05, 2.0]],   # pixel (25, 17.5 -> 18)
                          dtype=torch.float64)
    index, pixel = visible_pixels(points, depth, K, torch.eye(4, dtype=torch.float64), tolerance=0.1)
    assert index.tolist() == [0, 2, 6]
    assert pixel.tolist() == [15 * 40 + 20, 15 * 40 + 20, 18 * 40 + 25]
    # two views: the second (camera moved 1 m back, same wall now 3 m away) sees the same points
    pose = torch.eye(4, dtype=torch.float64)
    pose[2, 3] = -1.0
    scores = torch.zeros(2, 30, 40)
    scores[1] = 1.0  # the first view says class 1 everywhere
    other = torch.zeros(2, 30, 40)
    other[0] = 0.4
    other[1] = 0.6
    total, count = aggregate_views(points, [(scores, depth, K, torch.eye(4, dtype=torch.float64)),
                                            (other, torch.full((30, 40), 3.0), K, pose)], 2)
    # from 3 m away point 3 projects to u = 100 * 0.5 / 3 + 20 = 36.7 (inside) and point 5 to (6.7, 5), with depth
    assert count.tolist() == [2, 0, 2, 1, 0, 1, 2]
    assert torch.allclose(total[0], torch.tensor([0.4, 1.6], dtype=torch.float64))
    assert torch.allclose(total[3], torch.tensor([0.4, 0.6], dtype=torch.float64))
    assert vote(total, count).tolist() == [1, -1, 1, 1, -1, 1, 1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("mv") / "world", scenes=2, frames_per_scene=6, seed=5, workers=1,
                         point_spacing=0.05, progress=False, compact=True)


def test_perfect_2d_predictions_give_the_3d_labels(world):
    classes = get_class_set(world / "classes.json")
    scene = world / "scenes" / "scene_0000"
    labels = load_scene(scene, classes).segment
    folder = open_frame_folder(world / "frames" / "scene_0000")
    c = classes.num_classes

    def views():
        for i, frame in enumerate(folder):
            rendered = torch.from_numpy(read_label(folder.root / "label" / f"{folder.names[i]}.png").astype(np.int64))
            onehot = torch.zeros(c, *rendered.shape)
            known = rendered < c  # 255: not labelled
            onehot[rendered[known], known.nonzero()[:, 0], known.nonzero()[:, 1]] = 1.0
            yield onehot, torch.from_numpy(frame.depth), torch.from_numpy(frame.intrinsics), torch.from_numpy(frame.pose)

    coord = torch.from_numpy(np.load(scene / "coord.npy").astype(np.float64))
    total, count = aggregate_views(coord, views(), c, tolerance=0.1)
    pred = vote(total, count).numpy()
    seen = (pred >= 0) & (labels >= 0)
    assert seen.mean() > 0.2  # six views see a good part of the room
    agree = (pred[seen] == labels[seen]).mean()
    # wrong only where a pixel's label belongs to another surface within the tolerance: occlusion edges and contacts
    assert agree > 0.95
