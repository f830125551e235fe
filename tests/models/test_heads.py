import torch

from ppkt.models.heads import UPL, Projection3D


def _check_at_pixels_matches_full_map(upsample: bool):
    torch.manual_seed(0)
    head = UPL(in_channels=6, embed_dim=5, upsample=upsample)
    features = torch.randn(2, 6, 7, 9)
    size = (30, 41)  # not a multiple of the feature size
    full = head(features, size)  # (B, E, H, W)
    assert full.shape == (2, 5, 30, 41)
    batch = torch.tensor([0, 1, 1, 0, 1, 0])
    v = torch.tensor([0, 29, 5, 17, 0, 29])
    u = torch.tensor([0, 40, 13, 40, 22, 0])
    sampled = head.at_pixels(features, size, batch, v * 41 + u)
    assert torch.allclose(sampled, full[batch, :, v, u], atol=1e-5)
    assert torch.allclose(sampled.norm(dim=1), torch.ones(6), atol=1e-5)


def test_upl_at_pixels_equals_upsampled_map():
    _check_at_pixels_matches_full_map(upsample=True)


def test_pl_at_pixels_equals_nearest_map():
    _check_at_pixels_matches_full_map(upsample=False)


def test_upl_upsamples_to_image_size_and_normalises():
    head = UPL(in_channels=3, embed_dim=4)
    z = head(torch.randn(1, 3, 4, 5), (32, 40))
    assert z.shape == (1, 4, 32, 40)
    assert torch.allclose(z.norm(dim=1), torch.ones(1, 32, 40), atol=1e-5)


def test_projection3d_is_linear_then_unit_norm():
    head = Projection3D(96, 128)
    x = torch.randn(10, 96)
    z = head(x)
    ref = x @ head.linear.weight.T + head.linear.bias
    assert torch.allclose(z, ref / ref.norm(dim=1, keepdim=True), atol=1e-6)
