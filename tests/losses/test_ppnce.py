import math

import torch
import torch.nn.functional as F

from ppkt.losses.gathered import gathered_ppnce_loss
from ppkt.losses.ppnce import infonce, ppnce_loss


def test_ppnce_equals_written_out_formula():
    z3d = F.normalize(torch.tensor([[1.0, 0.2, -0.3], [0.1, 0.9, 0.4], [-0.5, 0.3, 0.8], [0.7, -0.7, 0.1]]), dim=1)
    z2d = F.normalize(torch.tensor([[0.8, 0.1, -0.1], [0.3, 0.7, 0.2], [-0.2, 0.1, 0.9], [0.2, 0.2, 0.2]]), dim=1)
    tau = 0.04
    # L = -(1/N) sum_i log( exp(z3_i . z2_i / tau) / sum_j exp(z3_i . z2_j / tau) )
    total = 0.0
    for i in range(4):
        num = math.exp(sum(z3d[i, k].item() * z2d[i, k].item() for k in range(3)) / tau)
        den = sum(math.exp(sum(z3d[i, k].item() * z2d[j, k].item() for k in range(3)) / tau) for j in range(4))
        total += -math.log(num / den)
    assert abs(ppnce_loss(z3d, z2d, tau).item() - total / 4) < 1e-4


def test_ppnce_is_near_zero_for_matched_orthogonal_embeddings():
    z = torch.eye(16)
    loss = ppnce_loss(z, z.clone(), 0.04)
    assert loss.item() < 16 * math.exp(-1 / 0.04)  # (n-1) e^{-1/tau} bound
    assert loss.item() >= 0


def test_ppnce_is_log_n_for_uninformative_embeddings():
    z3d = torch.zeros(64, 8)
    z3d[:, 0] = 1
    z2d = F.normalize(torch.randn(64, 8), dim=1)
    z2d[:, 0] = 0
    assert abs(ppnce_loss(z3d, F.normalize(z2d, dim=1), 0.04).item() - math.log(64)) < 1e-5


def test_ppnce_rejects_mismatched_shapes():
    try:
        ppnce_loss(torch.zeros(4, 8), torch.zeros(5, 8))
    except ValueError as err:
        assert "(n, E)" in str(err)
    else:
        raise AssertionError("expected ValueError")


def test_logits_are_float32_under_autocast():
    """Under bfloat16 autocast a logit of 1/tau = 25 would be rounded by up to 0.06; the loss computes them in
    float32 (its per-point terms are those of float32 inputs, exactly)."""
    g = torch.Generator().manual_seed(0)
    z3d, z2d = (F.normalize(torch.randn(256, 32, generator=g), dim=1) for _ in range(2))
    labels = torch.arange(256)
    want = infonce(z3d, z2d, labels, 0.04)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, loss = infonce(z3d, z2d, labels, 0.04), ppnce_loss(z3d, z2d, 0.04)
        rounded = F.cross_entropy((z3d @ z2d.T / 0.04).float(), labels, reduction="none")  # autocast's matmul
    assert got.dtype == loss.dtype == torch.float32 and torch.equal(got, want)
    assert loss.item() == ppnce_loss(z3d, z2d, 0.04).item()
    assert (rounded - want).abs().max() > 0.01


def test_gathered_loss_without_a_process_group_is_ppnce():
    g = torch.Generator().manual_seed(1)
    z3d, z2d = (F.normalize(torch.randn(20, 8, generator=g), dim=1).requires_grad_(True) for _ in range(2))
    loss = gathered_ppnce_loss(z3d, z2d, 0.07)
    grads = torch.autograd.grad(loss, (z3d, z2d))
    want = ppnce_loss(z3d, z2d, 0.07)
    assert loss.item() == want.item()
    for got, ref in zip(grads, torch.autograd.grad(want, (z3d, z2d))):
        assert torch.equal(got, ref)
