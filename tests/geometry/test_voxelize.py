import pytest
import torch

from ppkt.geometry.voxelize import voxelize


def test_voxelize_hand_made_points():
    pts = torch.tensor([[0.01, 0.01, 0.01], [0.02, 0.04, 0.0], [0.06, 0.0, 0.0], [0.051, 0.001, 0.001], [-0.01, 0.0, 0.0]])
    vox = voxelize(pts, 0.05)
    # floor(p / 0.05): (0,0,0), (0,0,0), (1,0,0), (1,0,0), (-1,0,0) -> shifted by the minimum (-1,0,0)
    expected = {(1, 0, 0), (2, 0, 0), (0, 0, 0)}
    assert {tuple(c) for c in vox.coords.tolist()} == expected
    cell = [tuple(vox.coords[v].tolist()) for v in vox.point_to_voxel]
    assert cell == [(1, 0, 0), (1, 0, 0), (2, 0, 0), (2, 0, 0), (0, 0, 0)]
    assert torch.allclose(vox.origin, torch.tensor([-0.05, 0.0, 0.0]))
    means = vox.mean(pts[:, :1])
    assert torch.isclose(means[vox.point_to_voxel[0], 0], torch.tensor(0.015))


def test_every_point_lies_in_its_voxel():
    pts = torch.rand(5000, 3) * 3 - 1
    vox = voxelize(pts, 0.025)
    corner = vox.coords[vox.point_to_voxel].double() * 0.025 + vox.origin.double()
    offset = pts.double() - corner
    assert (offset >= -1e-6).all() and (offset <= 0.025 + 1e-6).all()


def test_representatives_pick_one_point_of_each_voxel():
    pts = torch.rand(3000, 3)
    vox = voxelize(pts, 0.1)
    rep = vox.representatives(torch.Generator().manual_seed(0))
    assert rep.shape[0] == vox.num_voxels
    assert torch.equal(vox.point_to_voxel[rep], torch.arange(vox.num_voxels))
    other = vox.representatives(torch.Generator().manual_seed(1))
    assert not torch.equal(rep, other)  # random choice among the voxel's points
    assert torch.equal(rep, vox.representatives(torch.Generator().manual_seed(0)))  # seeded


@pytest.mark.parametrize("scale", [3.0, 400.0])
def test_voxels_and_their_order_equal_the_row_unique_reference(scale):
    """The packed-key path must give exactly torch.unique(dim=0)'s voxels, order and inverse."""
    pts = torch.randn(20000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * scale - 7.0
    grid = torch.floor(pts / 0.05).long()
    coords, inverse = torch.unique(grid - grid.min(dim=0).values, dim=0, return_inverse=True)
    vox = voxelize(pts, 0.05)
    assert torch.equal(vox.coords.long(), coords) and torch.equal(vox.point_to_voxel, inverse)
