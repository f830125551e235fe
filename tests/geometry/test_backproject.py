"""Back-projection pi(z, d) -> (c, f) and projection: hand-made cases and real overlapping Kinect frames."""
import math
from pathlib import Path

import pytest
import torch

from ppkt.data.frames import open_frame_folder
from ppkt.geometry.backproject import BackProjection, backproject, project

DATA = Path(__file__).resolve().parents[2] / "data" / "7scenes-redkitchen"

NAN, INF = float("nan"), float("inf")
# 3 x 4 depth map (metres) with holes: 0, NaN, inf and a negative value are all invalid.
DEPTH = torch.tensor([[1.0, 0.0, 2.0, NAN],
                      [0.5, 1.0, 0.0, 4.0],
                      [2.0, INF, -1.0, 1.0]])
K = torch.tensor([[2.0, 0.0, 1.5],
                  [0.0, 4.0, 1.0],
                  [0.0, 0.0, 1.0]])
# Valid pixels in row-major order: flat index v * 4 + u, and X = (u - 1.5) d / 2, Y = (v - 1) d / 4, Z = d.
INDEX = [0, 2, 4, 5, 7, 8, 11]
CAM_POINTS = [[-0.75, -0.25, 1.0],    # (u, v) = (0, 0), d = 1
              [0.5, -0.5, 2.0],       # (2, 0), d = 2
              [-0.375, 0.0, 0.5],     # (0, 1), d = 0.5
              [-0.25, 0.0, 1.0],      # (1, 1), d = 1
              [3.0, 0.0, 4.0],        # (3, 1), d = 4
              [-1.5, 0.5, 2.0],       # (0, 2), d = 2
              [0.75, 0.25, 1.0]]      # (3, 2), d = 1
# Camera-to-world pose: 90 degrees about z, (x, y, z) -> (-y, x, z), then + (10, 20, 30).
POSE = torch.tensor([[0.0, -1.0, 0.0, 10.0],
                     [1.0, 0.0, 0.0, 20.0],
                     [0.0, 0.0, 1.0, 30.0],
                     [0.0, 0.0, 0.0, 1.0]])
WORLD_POINTS = [[10.25, 19.25, 31.0],
                [10.5, 20.5, 32.0],
                [10.0, 19.625, 30.5],
                [10.0, 19.75, 31.0],
                [10.0, 23.0, 34.0],
                [9.5, 18.5, 32.0],
                [9.75, 20.75, 31.0]]


def test_backproject_hand_made_depth():
    bp = backproject(DEPTH, K)
    assert isinstance(bp, BackProjection) and bp.features is None
    assert bp.pixel_index.dtype == torch.int64
    assert bp.pixel_index.tolist() == INDEX
    assert bp.points.dtype == torch.float32 and bp.points.shape == (7, 3)
    torch.testing.assert_close(bp.points, torch.tensor(CAM_POINTS))


def test_features_follow_their_pixels():
    v, u = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    feats = torch.stack([10 * v + u, -(10 * v + u)], dim=-1)  # (3, 4, 2), value encodes the pixel
    bp = backproject(DEPTH, K, features=feats)
    expected = [[10 * (i // 4) + i % 4, -(10 * (i // 4) + i % 4)] for i in INDEX]
    assert bp.features.tolist() == expected
    assert bp.features.dtype == feats.dtype
    rgb = torch.randint(0, 256, (3, 4, 3), dtype=torch.uint8)
    bp = backproject(DEPTH, K, features=rgb)
    assert torch.equal(bp.features, rgb.reshape(12, 3)[INDEX])


def test_pose_applied():
    bp = backproject(DEPTH, K, pose=POSE)
    torch.testing.assert_close(bp.points, torch.tensor(WORLD_POINTS))
    assert bp.pixel_index.tolist() == INDEX


@pytest.mark.parametrize("pose", [None, POSE])
def test_project_round_trip(pose):
    bp = backproject(DEPTH, K, pose=pose)
    uv, z = project(bp.points, K, pose=pose)
    expected_uv = torch.tensor([[i % 4, i // 4] for i in INDEX], dtype=torch.float32)
    torch.testing.assert_close(uv, expected_uv)
    torch.testing.assert_close(z, DEPTH.reshape(-1)[INDEX])


def test_project_behind_camera_is_nan():
    uv, z = project(torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 2.0]]), K)
    assert torch.isnan(uv[:2]).all()
    assert uv[2].tolist() == [2.0 * 0.5 + 1.5, 4.0 * 1.0 + 1.0]
    assert z.tolist() == [-1.0, 0.0, 2.0]


@pytest.mark.parametrize("dtype, out", [(torch.float64, torch.float64), (torch.float16, torch.float32),
                                        (torch.bfloat16, torch.float32)])
def test_dtypes(dtype, out):
    bp = backproject(DEPTH.to(dtype), K.double(), pose=POSE.double())
    assert bp.points.dtype == out
    torch.testing.assert_close(bp.points, torch.tensor(WORLD_POINTS, dtype=out))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda():
    bp = backproject(DEPTH.cuda(), K, features=torch.ones(3, 4, 2).cuda(), pose=POSE)
    assert bp.points.is_cuda and bp.pixel_index.is_cuda
    torch.testing.assert_close(bp.points.cpu(), torch.tensor(WORLD_POINTS))
    uv, _ = project(bp.points, K.cuda(), POSE.cuda())
    assert uv.is_cuda


def test_shape_errors():
    with pytest.raises(ValueError, match=r"depth must be a \(H, W\)"):
        backproject(DEPTH[None], K)
    with pytest.raises(ValueError, match="float"):
        backproject(torch.ones(3, 4, dtype=torch.int32), K)
    with pytest.raises(ValueError, match=r"intrinsics must be .*\(3, 3\)"):
        backproject(DEPTH, torch.eye(4))
    with pytest.raises(ValueError, match=r"pose must be .*\(4, 4\)"):
        backproject(DEPTH, K, pose=torch.eye(3))
    with pytest.raises(ValueError, match=r"\(3, 4, C\).*3x4.*\(6, 8, 3\)"):
        backproject(DEPTH, K, features=torch.zeros(6, 8, 3))
    with pytest.raises(ValueError, match="permute"):
        backproject(DEPTH, K, features=torch.zeros(5, 3, 4))
    with pytest.raises(ValueError, match=r"points must be a \(N, 3\)"):
        project(torch.zeros(5, 2), K)


def _cloud(frame, pose):
    K = torch.from_numpy(frame.intrinsics)
    return backproject(torch.from_numpy(frame.depth), K, pose=torch.from_numpy(pose))


def test_real_overlapping_frames_agree():
    """Frames 000000 and 000050 of 7-Scenes redkitchen, put in the world by their poses, share surfaces."""
    frames = open_frame_folder(DATA, layout="7scenes")
    a, b = frames[0], frames[1]
    assert frames.names[:2] == ["000000", "000050"]
    cloud_a, cloud_b = _cloud(a, a.pose), _cloud(b, b.pose)
    K = torch.from_numpy(b.intrinsics)
    uv, z = project(cloud_a.points, K, torch.from_numpy(b.pose))
    H, W = b.depth.shape
    u, v = uv[:, 0].round(), uv[:, 1].round()
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)  # NaN compares False
    depth_b = torch.from_numpy(b.depth).reshape(-1)[(v[inside] * W + u[inside]).long()]
    consistent = (depth_b > 0) & ((depth_b - z[inside]).abs() < 0.05)  # visible in B, not occluded
    shared = cloud_a.points[inside][consistent]
    assert len(shared) > 0.3 * len(cloud_a.points), "frames 000000 and 000050 should overlap"

    gen = torch.Generator().manual_seed(0)
    sample = shared[torch.randperm(len(shared), generator=gen)[:1000]]
    nn = torch.cat([torch.cdist(chunk, cloud_b.points).min(dim=1).values for chunk in sample.split(250)])
    median = nn.median().item()
    print(f"median nearest-neighbour distance 000000 -> 000050: {median * 100:.2f} cm "
          f"({len(shared)} shared of {len(cloud_a.points)} points)")
    assert math.isfinite(median) and median < 0.02
