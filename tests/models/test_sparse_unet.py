"""SR-UNet (ppkt.models.sparse_unet): shapes, row order, gradients, batching, input errors, key layout."""

import pytest
import torch

from ppkt.models.sparse_unet import SR_UNET_LAYERS, SparseResUNet, build_sparse_unet

TINY_WIDTHS = (8, 16, 16, 32, 32, 16, 16, 16)


pytestmark = pytest.mark.usefixtures("one_thread")


def surface_cloud(n: int, seed: int, side: int = 24) -> torch.Tensor:
    """(~n, 3) unique voxel indices on a wavy sheet plus a wall, like a depth frame; int32."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 2, generator=g) * side
    sheet = torch.stack([u[:, 0], u[:, 1], 3 + 2 * torch.sin(u[:, 0] / 4)], 1)
    wall = torch.stack([u[:, 0], torch.full((n,), side / 2), u[:, 1] / 2], 1)
    pts = torch.cat([sheet[: n // 2], wall[n // 2 :]]).floor().long()
    return torch.unique(pts, dim=0).int()


def batch_of(*clouds):
    coords = torch.cat([torch.cat([torch.full((len(c), 1), b, dtype=torch.int32), c], 1) for b, c in enumerate(clouds)])
    return coords


def test_build_names_and_unknown():
    for name, layers in SR_UNET_LAYERS.items():
        model = build_sparse_unet(name, 3, TINY_WIDTHS)
        assert model.layers == layers and model.out_channels == TINY_WIDTHS[-1]
    assert build_sparse_unet("SR-UNet34", 3).out_channels == 96
    with pytest.raises(ValueError, match="SR-UNet14.*SR-UNet18.*SR-UNet34"):
        build_sparse_unet("SR-UNet50", 3)


@pytest.mark.parametrize("name", sorted(SR_UNET_LAYERS))
def test_forward_backward_every_variant(name):
    torch.manual_seed(0)
    model = build_sparse_unet(name, 3, TINY_WIDTHS)
    coords = batch_of(surface_cloud(700, 1), surface_cloud(700, 2))
    feats = torch.randn(len(coords), 3)
    out = model(feats, coords, batch_size=2)
    assert out.shape == (len(coords), TINY_WIDTHS[-1]) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"


def test_row_order_follows_input_order():
    torch.manual_seed(0)
    model = build_sparse_unet("SR-UNet14", 3, TINY_WIDTHS).double()
    coords = batch_of(surface_cloud(500, 3), surface_cloud(500, 4))
    feats = torch.randn(len(coords), 3, dtype=torch.float64)
    perm = torch.randperm(len(coords))
    out = model(feats, coords, 2)
    out_perm = model(feats[perm], coords[perm], 2)
    assert torch.allclose(out_perm, out[perm], atol=1e-10, rtol=0)


def test_clouds_in_a_batch_are_independent_in_eval():
    torch.manual_seed(0)
    model = build_sparse_unet("SR-UNet14", 3, TINY_WIDTHS).double().eval()
    a, b = surface_cloud(400, 5), surface_cloud(600, 6, side=37)  # different extents
    fa, fb = torch.randn(len(a), 3, dtype=torch.float64), torch.randn(len(b), 3, dtype=torch.float64)
    with torch.no_grad():
        both = model(torch.cat([fa, fb]), batch_of(a, b), 2)
        alone = model(fa, batch_of(a), 1)
    assert torch.allclose(both[: len(a)], alone, atol=1e-10, rtol=0)


def test_encode_bottleneck():
    model = build_sparse_unet("SR-UNet14", 3, TINY_WIDTHS)
    coords = batch_of(surface_cloud(500, 7), surface_cloud(500, 8))
    z = model.encode(torch.randn(len(coords), 3), coords, 2)
    assert z.features.shape[1] == TINY_WIDTHS[3]
    c = coords.long()
    expect = torch.unique(torch.cat([c[:, :1], c[:, 1:] // 16], 1), dim=0)
    assert torch.equal(torch.unique(z.indices.long(), dim=0), expect)


def test_pointcept_spunet_v1m1_key_layout():
    """Names/shapes as in Pointcept's SpUNet-v1m1 (num_classes=0). Checked once against a transcription of
    Pointcept's module (identical ordered keys, shapes and outputs); pinned here by count and samples."""
    sd = build_sparse_unet("SR-UNet34", 6).state_dict()
    assert len(sd) == 354
    assert sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "tracked"))) == (
        39143904 + 32 * 125 * 3  # 39,143,904 params at in_channels=3; the stem grows by 32*5^3 per channel
    )
    expect = {
        "conv_input.0.weight": (32, 5, 5, 5, 6),
        "conv_input.1.running_var": (32,),
        "down.0.0.weight": (32, 2, 2, 2, 32),
        "down.3.0.weight": (256, 2, 2, 2, 128),
        "enc.3.block5.conv2.weight": (256, 3, 3, 3, 256),
        "enc.0.block1.bn1.bias": (32,),
        "up.3.0.weight": (256, 2, 2, 2, 256),
        "up.0.0.weight": (96, 2, 2, 2, 96),
        "dec.3.block0.conv1.weight": (256, 3, 3, 3, 384),
        "dec.3.block0.proj.0.weight": (256, 1, 1, 1, 384),
        "dec.0.block0.proj.0.weight": (96, 1, 1, 1, 128),
        "dec.0.block1.conv2.weight": (96, 3, 3, 3, 96),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith("enc.") and ".proj." in k for k in sd)  # same width: identity shortcut
    stem = ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert list(sd)[:7] == [f"conv_input.{k}" for k in stem] + ["down.0.0.weight"]


def test_clear_errors():
    model = SparseResUNet(3, SR_UNET_LAYERS["SR-UNet14"], TINY_WIDTHS)
    coords = batch_of(surface_cloud(100, 9))
    feats = torch.randn(len(coords), 3)
    cases = [
        (feats[:, :2], coords, 1, r"\(N, 3\)"),
        (feats, coords[:, 1:], 1, r"\(N, 4\)"),
        (feats, coords.float(), 1, "integer"),
        (feats.long(), coords, 1, "floating"),
        (feats[:-1], coords, 1, "rows"),
        (feats, coords - torch.tensor([0, 1, 0, 0], dtype=torch.int32), 1, "non-negative"),
        (feats, torch.cat([coords[:1], coords[:1], coords[2:]]), 1, "duplicate"),
        (feats, coords, 0, "batch_size"),
        (feats, coords + torch.tensor([1, 0, 0, 0], dtype=torch.int32), 1, "batch index"),
        (feats[:0], coords[:0], 1, "empty"),
    ]
    for f, c, b, msg in cases:
        with pytest.raises(ValueError, match=msg):
            model(f, c, b)
    with pytest.raises(ValueError, match="8 entries"):
        SparseResUNet(3, (1, 1, 1, 1), TINY_WIDTHS)
