"""The pairing invariant: after every augmentation, a pixel's 2D feature is paired with the voxel of its own 3D point."""
import math
from pathlib import Path

import pytest
import torch

from ppkt.config import AugmentConfig, DataConfig
from ppkt.data.frames import open_frame_folder
from ppkt.data.pairs import PixelPointFrames, collate_pairs, make_sample
from ppkt.geometry.augment import random_image_transform, up_axis_rotation

FRAMES = Path(__file__).resolve().parents[2] / "data" / "7scenes-redkitchen"


@pytest.fixture(scope="module")
def frame():
    return open_frame_folder(FRAMES)[3]


def _hand_point(depth, K, r, c):
    """Camera-frame point of pixel (row r, col c), written out: ((c - cx) d / fx, (r - cy) d / fy, d)."""
    d = depth[r, c]
    return torch.stack([(c - K[0, 2]) * d / K[0, 0], (r - K[1, 2]) * d / K[1, 1], d], dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_each_voxel_is_paired_with_a_pixel_of_its_own_point(frame, seed):
    data = DataConfig(roots=[str(FRAMES)], image_size=[120, 160], voxel_size=0.05)
    aug = AugmentConfig(flip=0.5, resize=[0.7, 1.3], rotation=math.pi, scale=[0.8, 1.2])
    sample = make_sample(frame, data, aug, torch.Generator().manual_seed(seed))
    t2d, t3d = sample.image_transform, sample.point_transform
    # Independent truth: the original pixel each output pixel shows, its original 3D point (hand formula),
    # mirrored if the image was flipped, then moved by the sample's 3D transform.
    rows, cols, valid = t2d.source_pixels()
    w_out = data.image_size[1]
    v, u = sample.pixel // w_out, sample.pixel % w_out
    assert valid[v, u].all()
    depth = torch.from_numpy(frame.depth).double()
    K = torch.from_numpy(frame.intrinsics).double()
    src = _hand_point(depth, K, rows[v, u], cols[v, u])
    if t2d.flip:
        src[:, 0] = -src[:, 0]
    moved = t3d(src)
    corner = sample.coords.double() * data.voxel_size + sample.origin.double()
    # nearest-pixel resampling moves a ray by at most half an original pixel in u and in v (a diagonal of
    # 0.71 px once rotated): allow one pixel, d / fx metres, times the scale; a voxel here is ~25 pixels
    slack = (depth.max() / K[0, 0]).item() * t3d.scale + 1e-6
    inside = ((moved - corner) >= -slack) & ((moved - corner) <= data.voxel_size + slack)
    assert inside.all(dim=1).float().mean() == 1.0
    # and the colour fed to the teacher at that pixel is the colour of the original pixel (up to resampling)
    color = torch.from_numpy(frame.color).float()[rows[v, u], cols[v, u]] / 255
    seen = sample.image[:, v, u].T
    assert (seen - color).abs().median() < 0.08


def test_flip_mirrors_intrinsics_and_resize_scales_them():
    K = torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    gen = torch.Generator().manual_seed(0)
    t = random_image_transform((480, 640), (240, 320), (1.0, 1.0), 1.0, gen)
    K2 = t.intrinsics(K)
    # half size: fx' = fx / 2, cx' = (cx + 0.5) / 2 - 0.5 = 159.75; flipped: 319 - 159.75 = 159.25
    assert torch.allclose(K2, torch.tensor([[250.0, 0, 159.25], [0, 250.0, 119.75], [0, 0, 1]]))
    rows, cols, valid = t.source_pixels()
    assert valid.all() and cols[0, 0] == 639 and cols[0, -1] == 1 and rows[-1, 0] == 479


def test_up_axis_rotation_keeps_height():
    R = up_axis_rotation(0.3)
    p = torch.tensor([[1.0, -2.0, 3.0]])
    q = p @ R.T
    assert q[0, 1] == -2.0 and torch.isclose(q.norm(), p.norm())
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6) and torch.isclose(torch.det(R), torch.tensor(1.0))


def test_elastic_distortion_is_smooth_and_bounded(frame):
    data = DataConfig(roots=[str(FRAMES)], image_size=[120, 160], voxel_size=0.05)
    aug = AugmentConfig(flip=0.0, resize=[1.0, 1.0], rotation=0.0, scale=[1.0, 1.0])
    sample = make_sample(frame, data, aug, torch.Generator().manual_seed(5))
    pts = torch.rand(2000, 3) * 2
    disp = sample.point_transform(pts) - pts
    assert disp.abs().max() < 0.5  # metres: magnitudes 0.4 + 1.6 times blurred unit noise
    assert disp.abs().mean() > 1e-3
    near = sample.point_transform(pts + 0.01) - (pts + 0.01)
    assert (near - disp).abs().max() < 0.05  # 1 cm apart -> nearly the same displacement


def test_elastic_field_follows_its_formula():
    """At grid node (i, j, k) a point moves by magnitude x noise[:, i, j, k]; halfway between two nodes along an axis
    by the mean of theirs (trilinear); and the displacement changes by at most magnitude x the largest noise step
    between neighbouring nodes per granularity of distance, per axis (its Lipschitz bound)."""
    from ppkt.geometry.augment import ElasticField

    g, m = 0.2, 0.4
    noise = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    field = ElasticField(noise, torch.tensor([1.0, -2.0, 0.5]), g, m)
    nodes = torch.tensor([[0, 0, 0], [4, 3, 5], [2, 1, 3], [3, 2, 1]])
    at = torch.tensor([1.0, -2.0, 0.5]) + g * nodes.double()
    disp = field(at) - at
    expected = torch.stack([m * noise[:, i, j, k] for i, j, k in nodes.tolist()]).double()
    assert torch.allclose(disp, expected, atol=1e-6)
    half = at[2:3] + torch.tensor([[g / 2, 0, 0]], dtype=torch.float64)  # between nodes (2,1,3) and (3,1,3)
    assert torch.allclose(field(half) - half, m * (noise[:, 2, 1, 3] + noise[:, 3, 1, 3]).double()[None] / 2, atol=1e-6)
    step = max(noise.diff(dim=d).abs().max() for d in (1, 2, 3))
    pts = torch.rand(500, 3, dtype=torch.float64) * torch.tensor([0.8, 0.6, 1.0]) + torch.tensor([1.0, -2.0, 0.5])
    moved = pts + torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64)
    change = ((field(moved) - moved) - (field(pts) - pts)).abs().max()
    assert change <= m * step / g * 0.01 + 1e-9


def test_dataset_and_collate_build_a_paired_batch():
    data = DataConfig(roots=[str(FRAMES)], image_size=[60, 80], voxel_size=0.1)
    ds = PixelPointFrames(data, AugmentConfig())
    assert len(ds) == 20
    samples = [ds[(0, 1)], ds[(5, 2)], ds[(11, 3)]]
    sizes = [s.coords.shape[0] for s in samples]
    assert min(sizes) > 0 and len(set(sizes)) > 1  # different voxel counts: a wrong offset would show
    batch = collate_pairs(samples)
    assert batch.batch_size == 3 and batch.skipped == []
    assert torch.equal(batch.images, torch.stack([s.image for s in samples]))
    # rows of sample b come as one block, in sample order, each block in the sample's own row order
    ids = torch.cat([torch.full((n,), b, dtype=torch.long) for b, n in enumerate(sizes)])
    assert torch.equal(batch.voxel_batch, ids) and batch.voxel_batch.dtype == torch.long
    assert torch.equal(batch.coords[:, 0], ids.int()) and batch.coords.dtype == torch.int32
    assert torch.equal(batch.coords[:, 1:], torch.cat([s.coords for s in samples]))
    assert torch.equal(batch.feats, torch.cat([s.feats for s in samples]))
    assert torch.equal(batch.pixel, torch.cat([s.pixel for s in samples]))
    # so row r of the batch is (sample b, its voxel r - offset_b) throughout: coords, feats and the paired pixel
    offsets = [0, sizes[0], sizes[0] + sizes[1]]
    for b, s in enumerate(samples):
        r = offsets[b] + torch.arange(s.coords.shape[0])
        assert torch.equal(batch.coords[r, 1:], s.coords) and torch.equal(batch.pixel[r], s.pixel)
        assert torch.equal(batch.feats[r], s.feats) and (batch.voxel_batch[r] == b).all()
    assert batch.pixel.max() < 60 * 80


def test_up_axis_rotation_about_world_z_keeps_height_and_matches_the_formula():
    R = up_axis_rotation(0.3, axis=2)
    c, s = math.cos(0.3), math.sin(0.3)
    assert torch.allclose(R, torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]))
    # axis 1 (camera y) is the rotation written out in test_up_axis_rotation_keeps_height
    assert torch.allclose(up_axis_rotation(0.3, axis=1), torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_world_frame_pairs_each_voxel_with_the_world_point_of_its_pixel(frame, seed):
    data = DataConfig(roots=[str(FRAMES)], image_size=[120, 160], voxel_size=0.05, frame="world")
    aug = AugmentConfig(flip=0.5, resize=[0.7, 1.3], rotation=math.pi, scale=[0.8, 1.2], elastic=[])
    sample = make_sample(frame, data, aug, torch.Generator().manual_seed(seed))
    t2d, t3d = sample.image_transform, sample.point_transform
    assert torch.allclose(t3d.rotation[2], torch.tensor([0.0, 0.0, 1.0]))  # rotation about world z keeps height
    rows, cols, valid = t2d.source_pixels()
    w_out = data.image_size[1]
    v, u = sample.pixel // w_out, sample.pixel % w_out
    depth = torch.from_numpy(frame.depth).double()
    K = torch.from_numpy(frame.intrinsics).double()
    pose = torch.from_numpy(frame.pose).double()
    # independent truth: the original pixel's camera point, then x_world = R x_cam + t (no mirror, flipped or not)
    world = _hand_point(depth, K, rows[v, u], cols[v, u]) @ pose[:3, :3].T + pose[:3, 3]
    moved = world @ t3d.rotation.double().T * t3d.scale
    corner = sample.coords.double() * data.voxel_size + sample.origin.double()
    slack = (depth.max() / K[0, 0]).item() * t3d.scale + 1e-5
    inside = ((moved - corner) >= -slack) & ((moved - corner) <= data.voxel_size + slack)
    assert inside.all(dim=1).all()


def test_world_frame_needs_a_pose_and_a_known_frame_name(frame):
    from ppkt.config import ConfigError
    from ppkt.data.frames import FrameError, RGBDFrame

    no_pose = RGBDFrame(frame.color, frame.depth, frame.intrinsics, None, source="cam0/frame-7.depth.png")
    data = DataConfig(roots=[str(FRAMES)], image_size=[60, 80], voxel_size=0.1, frame="world")
    with pytest.raises(FrameError, match=r"cam0/frame-7.depth.png: no camera pose.*data.frame=world"):
        make_sample(no_pose, data, AugmentConfig(), torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="data.frame must be one of"):
        PixelPointFrames(DataConfig(roots=[str(FRAMES)], frame="gravity"), AugmentConfig())
