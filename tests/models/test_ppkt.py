"""PPKT.forward against a hand-gathered reference: the same sampled pairs, the teacher's FULL upsampled map read at the
paired pixels, and the InfoNCE formula written out here."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ppkt.models.heads import UPL, Projection3D
from ppkt.models.ppkt import PPKT
from ppkt.models.sparse_unet import build_sparse_unet
from ppkt.models.teacher import build_teacher

H, W = 40, 56
TAU = 0.07


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(sizes=(300, 220), seed=0) -> SimpleNamespace:
    """Two images; sample b has sizes[b] distinct voxels of an 8^3 grid, random colours and random paired pixels."""
    g = torch.Generator().manual_seed(seed)
    coords, vb = [], []
    for b, n in enumerate(sizes):
        cell = torch.randperm(512, generator=g)[:n]
        coords.append(torch.stack([torch.full((n,), b), cell // 64, (cell // 8) % 8, cell % 8], 1))
        vb.append(torch.full((n,), b))
    m = sum(sizes)
    return SimpleNamespace(images=torch.rand(len(sizes), 3, H, W, generator=g), coords=torch.cat(coords).int(),
                           feats=torch.rand(m, 3, generator=g) - 0.5, voxel_batch=torch.cat(vb),
                           pixel=torch.randint(0, H * W, (m,), generator=g), batch_size=len(sizes))


def _model(upsample: bool, n_sub: int) -> PPKT:
    torch.manual_seed(0)
    teacher = build_teacher("resnet18", "none", "layer1")  # stride 4: (B, 64, 10, 14)
    student = build_sparse_unet("SR-UNet14", 3, [8, 16, 16, 16, 16, 16, 16, 16])
    return PPKT(teacher, student, UPL(teacher.out_channels, 16, upsample=upsample), Projection3D(student.out_channels, 16),
                n_sub=n_sub, temperature=TAU)


def _reference_loss(model: PPKT, batch, seed: int, f3d=None) -> torch.Tensor:
    """The loss written out: the same n_sub voxels (same generator seed), teacher features from the FULL map at the
    image size (F.interpolate, then the 1x1 conv, unit norm) read at [b, :, v, u], and
    -mean_i log softmax_j(z3d_i . z2d_j / tau)[i]."""
    with torch.no_grad():
        f2d = model.teacher(batch.images)
    mode = dict(mode="bilinear", align_corners=False) if model.g2d.upsample else dict(mode="nearest-exact")
    full = F.normalize(F.conv2d(F.interpolate(f2d, size=(H, W), **mode), model.g2d.conv.weight, model.g2d.conv.bias), dim=1)
    m = batch.feats.shape[0]
    idx = torch.randperm(m, generator=torch.Generator().manual_seed(seed))[: model.n_sub]
    b, p = batch.voxel_batch[idx], batch.pixel[idx]
    z2d = full[b, :, p // W, p % W]
    if f3d is None:
        f3d = model.student(batch.feats, batch.coords, batch.batch_size)
    z3d = F.normalize(f3d[idx] @ model.g3d.linear.weight.T + model.g3d.linear.bias, dim=1)
    logits = z3d @ z2d.T / TAU
    return -torch.log_softmax(logits, dim=1).diagonal().mean()


@pytest.mark.parametrize("upsample,n_sub", [(True, 200), (False, 200), (True, 10_000)])  # 10_000 > M: every voxel
def test_forward_equals_the_hand_gathered_infonce_loss(upsample, n_sub):
    model, batch = _model(upsample, n_sub), _batch()
    for p in model.teacher.parameters():  # trainable on purpose: PPKT itself must keep gradients out of the teacher
        p.requires_grad_(True)
    loss = model(batch, torch.Generator().manual_seed(3))
    ref = _reference_loss(model, batch, seed=3)
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 1e-5, (loss.item(), ref.item())
    # another seed draws other pairs, hence another loss: the sampling is part of what is checked
    if n_sub < batch.feats.shape[0]:
        with torch.no_grad():
            f3d = model.student(batch.feats, batch.coords, batch.batch_size)
            assert abs(_reference_loss(model, batch, 4, f3d).item() - ref.item()) > 1e-3

    # gradients: the same as the reference's in the student and both heads, none in the teacher
    trained = {"student": model.student, "g2d": model.g2d, "g3d": model.g3d}
    grads_of = lambda: {f"{k}.{n}": p.grad.clone() for k, mod in trained.items() for n, p in mod.named_parameters()  # noqa: E731
                        if p.grad is not None}
    model.zero_grad(set_to_none=True)
    loss.backward()
    got = grads_of()
    for name, mod in trained.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters()), f"no gradient reaches {name}"
    assert all(p.grad is None for p in model.teacher.parameters())
    model.zero_grad(set_to_none=True)
    ref.backward()
    want = grads_of()
    assert got.keys() == want.keys()
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-6, rtol=1e-4), key
    assert all(p.grad is None for p in model.teacher.parameters())

