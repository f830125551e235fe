"""Farthest-point sampling, ball query and grouping against brute-force references; box-consistent augmentation."""
import numpy as np
import pytest
import torch

from ppkt.detection.augment import flip_x, flip_y, random_augment, rotate_z, scale
from boxes_reference import points_in_box
from ppkt.detection import pointops
from ppkt.detection.pointops import ball_query, farthest_point_sample, group


@pytest.fixture(params=["fpsample", "torch"])
def fps_backend(request, monkeypatch):
    """Farthest-point sampling through the compiled fpsample (CPU) and through the PyTorch loop: both must agree
    with the references."""
    if request.param == "fpsample" and pointops.fpsample is None:
        pytest.skip("fpsample is not installed")
    if request.param == "torch":
        monkeypatch.setattr(pointops, "fpsample", None)
    return request.param


def fps_reference(xyz: np.ndarray, k: int) -> list:
    chosen = [0]
    for _ in range(k - 1):
        d = np.min([((xyz - xyz[c]) ** 2).sum(1) for c in chosen], axis=0)
        chosen.append(int(np.argmax(d)))
    return chosen


def ball_reference(xyz: np.ndarray, centers: np.ndarray, radius: float, nsample: int) -> np.ndarray:
    out = np.zeros((len(centers), nsample), dtype=np.int64)
    for i, c in enumerate(centers):
        inside = [j for j in range(len(xyz)) if ((xyz[j] - c) ** 2).sum() <= radius ** 2][:nsample]
        if inside:
            out[i] = inside + [inside[0]] * (nsample - len(inside))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fps_and_ball_query_equal_brute_force(seed, fps_backend):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0, 2, (300, 3))
    assert farthest_point_sample(torch.from_numpy(xyz), 40).tolist() == fps_reference(xyz, 40)
    centers = np.concatenate([xyz[:20], [[50.0, 50.0, 50.0]]])  # the last has no point near it
    got = ball_query(torch.from_numpy(xyz), torch.from_numpy(centers), 0.3, 16)
    assert np.array_equal(got.numpy(), ball_reference(xyz, centers, 0.3, 16))
    feats = torch.from_numpy(rng.normal(size=(300, 5)))
    grouped = group(feats, got)
    assert grouped.shape == (21, 16, 5) and torch.equal(grouped[3, 7], feats[got[3, 7]])


def test_fps_spreads_points(fps_backend):
    # two clusters far apart: the second pick is in the other cluster
    xyz = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [10.0, 0, 0], [10.1, 0, 0]])
    assert farthest_point_sample(xyz, 2).tolist() == [0, 3]


def test_boxes_keep_their_points_under_augmentation():
    rng = np.random.default_rng(0)
    points = rng.uniform(-3, 3, (20000, 3))
    boxes = np.array([[0.5, 1.0, 0.0, 1.5, 0.8, 1.0, 0.4], [-1.5, -1.0, 0.5, 1.0, 2.0, 1.2, -1.1],
                      [2.0, -2.0, -0.5, 0.6, 0.6, 2.0, 0.0]])
    inside = np.stack([points_in_box(points, b) for b in boxes])
    assert inside.sum(1).min() > 50
    for p, b in (flip_x(points, boxes), flip_y(points, boxes), rotate_z(points, boxes, 0.7), scale(points, boxes, 1.3),
                 random_augment(points, boxes, np.random.default_rng(3))):
        assert np.array_equal(np.stack([points_in_box(p, bb) for bb in b]), inside)
    moved, _ = rotate_z(points, boxes, np.pi / 2)
    assert np.allclose(moved[:, :2], np.stack([-points[:, 1], points[:, 0]], 1))  # (x, y) -> (-y, x)


def test_batched_fps_equals_one_cloud_at_a_time_with_padding(fps_backend):
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 2, (200, 3)), rng.uniform(0, 2, (150, 3))
    padded = np.concatenate([b, np.repeat(b[:1], 50, 0)])  # b padded with copies of its first point
    got = farthest_point_sample(torch.from_numpy(np.stack([a, padded])), 30)
    assert got[0].tolist() == fps_reference(a, 30) and got[1].tolist() == fps_reference(b, 30)


def test_fps_on_a_grid_each_pick_is_a_farthest_point_and_k_beyond_the_cloud_repeats(fps_backend):
    """Voxel centres tie often: every pick is one of the farthest points (the PyTorch loop takes the lowest index of
    them, fpsample its own), and k beyond the cloud's size gives all points and then the start again."""
    grid = np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    got = farthest_point_sample(torch.from_numpy(grid), 20).tolist()
    assert got[0] == 0 and len(set(got)) == 20
    for i in range(1, 20):
        d = np.min([((grid - grid[c]) ** 2).sum(1) for c in got[:i]], axis=0)
        assert d[got[i]] == d.max()
    if fps_backend == "torch":
        assert got == fps_reference(grid, 20)
    three = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]])
    assert farthest_point_sample(three, 5).tolist() == [0, 2, 1, 0, 0]
