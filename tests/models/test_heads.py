import pytest
import torch
import torch.nn.functional as F

from ppkt.models.heads import UPL, Projection3D


# (feature h, w) -> (image H, W): non-integer ratios, integer ratios (pixel centres exactly on cell boundaries for
# nearest-exact), a single cell, the same size, and images smaller than the feature map
SHAPES = [((7, 9), (30, 41)), ((4, 5), (32, 40)), ((2, 3), (3, 9)), ((1, 1), (5, 7)), ((5, 6), (5, 6)), ((9, 12), (4, 5)),
          ((3, 16), (17, 6))]


@pytest.mark.parametrize("upsample", [True, False])
@pytest.mark.parametrize("fsize,size", SHAPES)
def test_at_pixels_equals_the_full_map_at_every_pixel(upsample, fsize, size):
    torch.manual_seed(0)
    head = UPL(in_channels=6, embed_dim=5, upsample=upsample)
    features = torch.randn(2, 6, *fsize)
    H, W = size
    full = head(features, size)  # (B, E, H, W): F.interpolate of the projected map, the definition
    assert full.shape == (2, 5, H, W)
    batch = torch.arange(2).repeat_interleave(H * W)
    pixel = torch.arange(H * W).repeat(2)
    sampled = head.at_pixels(features, size, batch, pixel)
    expected = full.permute(0, 2, 3, 1).reshape(2 * H * W, 5)  # row b * H * W + v * W + u
    assert sampled.dtype == torch.float32
    assert torch.allclose(sampled, expected, atol=1e-5, rtol=0), (sampled - expected).abs().max()
    # and in a shuffled order, as PPKT samples them
    perm = torch.randperm(2 * H * W, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(head.at_pixels(features, size, batch[perm], pixel[perm]), expected[perm], atol=1e-5, rtol=0)


def _reference(head: UPL, features: torch.Tensor, size, batch, pixel) -> torch.Tensor:
    """float64 truth: bilinear upsampling (align_corners=False) of the upcast features, the 1x1 conv, unit norm.

    (forward() convolves first and upsamples then: the same, as the bilinear weights of a pixel sum to 1.)"""
    f = F.interpolate(features.double(), size=size, mode="bilinear", align_corners=False)
    z = F.conv2d(f, head.conv.weight.double(), head.conv.bias.double())
    z = F.normalize(z, dim=1)
    return z[batch, :, pixel // size[1], pixel % size[1]]


def _old_half_precision_at_pixels(head: UPL, features: torch.Tensor, size, batch, pixel) -> torch.Tensor:
    """The former at_pixels: coordinates and weights in features.dtype (only the final projection upcast here)."""
    h_img, w_img = size
    h, w = features.shape[-2:]
    v, u = (pixel // w_img).to(features.dtype), (pixel % w_img).to(features.dtype)
    x = ((u + 0.5) * w / w_img - 0.5).clamp_min(0)
    y = ((v + 0.5) * h / h_img - 0.5).clamp_min(0)
    if not (x.isfinite().all() and y.isfinite().all()):
        return None  # overflowed: the former code then indexed the features at -2**63 (IndexError)
    x0, y0 = x.floor().long().clamp(max=w - 1), y.floor().long().clamp(max=h - 1)
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    ax, ay = (x - x0).unsqueeze(1), (y - y0).unsqueeze(1)
    cell = lambda yy, xx: features[batch, :, yy, xx]  # noqa: E731
    f = (1 - ay) * ((1 - ax) * cell(y0, x0) + ax * cell(y0, x1)) + ay * ((1 - ax) * cell(y1, x0) + ax * cell(y1, x1))
    return F.normalize(F.linear(f.double(), head.conv.weight.flatten(1).double(), head.conv.bias.double()), dim=1)


@pytest.mark.parametrize("cells", [80, 20])  # 80: stride 32, as a teacher map; 20: (u + 0.5) * w stays below 65504
def test_at_pixels_of_half_precision_features_keeps_full_precision_coordinates(cells):
    torch.manual_seed(0)
    head = UPL(in_channels=16, embed_dim=8)
    features = torch.randn(1, 16, 2, cells).half()  # as a teacher under CUDA autocast gives them
    size = (4, 2560)  # wider than 2048: float16 cannot hold every pixel index
    pixel = torch.cat([torch.arange(0, 4 * 2560, 7), torch.tensor([2049, 2559, 3 * 2560 + 2051, 3 * 2560 + 2559])])
    batch = torch.zeros_like(pixel)
    truth = _reference(head, features, size, batch, pixel)
    got = head.at_pixels(features, size, batch, pixel)
    assert got.dtype == torch.float32
    # the features are exact in float64 too: the only error left is float32 arithmetic (float16 output rounding
    # alone would be ~5e-4)
    err = (got.double() - truth).abs().max(dim=1).values
    assert err.max() < 1e-5, err.max()
    assert (pixel % 2560 > 2048).sum() > 100 and err[pixel % 2560 > 2048].max() < 1e-5
    # the former float16 formula misses that bound by far (its u > 2048 are rounded to even pixels, its coordinates
    # to 11 bits, and with 80 cells (u + 0.5) * 80 overflows to inf)
    old = _old_half_precision_at_pixels(head, features, size, batch, pixel)
    if cells == 80:
        assert old is None
    else:
        old_err = (old - truth).abs().max(dim=1).values
        assert old_err[pixel % 2560 > 2048].max() > 2e-3


def test_at_pixels_under_autocast_keeps_float32():
    torch.manual_seed(0)
    head = UPL(in_channels=16, embed_dim=8)
    features = torch.randn(1, 16, 2, 80).bfloat16()
    size, pixel = (4, 2560), torch.arange(0, 4 * 2560, 5)
    batch = torch.zeros_like(pixel)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head.at_pixels(features, size, batch, pixel)
    assert got.dtype == torch.float32
    assert (got.double() - _reference(head, features, size, batch, pixel)).abs().max() < 1e-5


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
