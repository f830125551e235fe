"""The baseline losses against their formulas written out here with explicit sums (float64)."""
import math

import numpy as np
import pytest
import torch

from ppkt.losses.crd import CRDLoss
from ppkt.losses.global_kd import GlobalClassifier, global_kd_loss, pool_per_sample
from ppkt.losses.gupta import GuptaMap, gupta_loss
from ppkt.losses.ppkd import ppkd_loss
from ppkt.geometry.match import match_points
from ppkt.losses.pointcontrast import pointinfonce_loss, sample_matches


def softmax(row, t):
    e = [math.exp(x / t) for x in row]
    return [x / sum(e) for x in e]


def kl_written_out(student, teacher, t):
    total = 0.0
    for s, q in zip(student.tolist(), teacher.tolist()):
        ps, pt = softmax(s, t), softmax(q, t)
        total += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))
    return t * t * total / len(student)


def infonce_written_out(u, w, t):
    """-(1/n) sum_i log(exp(u_i.w_i/t) / sum_j exp(u_i.w_j/t)); w may have more rows than u (extra negatives)."""
    total = 0.0
    for i in range(u.shape[0]):
        logits = [float(u[i] @ w[j]) / t for j in range(w.shape[0])]
        total -= logits[i] - math.log(sum(math.exp(x) for x in logits))
    return total / u.shape[0]


def unit(rows, dim, seed):
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed),
                                                     dtype=torch.float64), dim=1)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_ppkd_and_global_kd_are_the_kl_formula(t):
    g = torch.Generator().manual_seed(0)
    s, q = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    assert ppkd_loss(s, q, t).item() == pytest.approx(kl_written_out(s, q, t), rel=1e-10)
    assert global_kd_loss(s, q, t).item() == pytest.approx(kl_written_out(s, q, t), rel=1e-10)
    assert ppkd_loss(q, q, t).item() == pytest.approx(0.0, abs=1e-12)
    s.requires_grad_(True)
    q.requires_grad_(True)
    ppkd_loss(s, q, t).backward()
    assert s.grad is not None and q.grad is None  # the teacher is not trained


def test_global_classifier_pools_each_sample():
    feats = torch.tensor([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0]])
    index = torch.tensor([0, 0, 1])
    assert torch.equal(pool_per_sample(feats, index, 3), torch.tensor([[2.0, 1.0], [10.0, 10.0], [0.0, 0.0]]))
    head = GlobalClassifier(2, 4)
    out = head(feats, index, 2)
    assert torch.allclose(out[0], head.linear(torch.tensor([2.0, 1.0])))


def test_gupta_is_the_mean_squared_distance():
    m = GuptaMap(3, 2)
    g3d, g2d = torch.randn(4, 3), torch.randn(4, 2)
    mapped = m(g3d)
    want = sum(float(((mapped[b] - g2d[b]) ** 2).sum().detach()) / 2 for b in range(4)) / 4  # / C2 = 2 channels
    assert gupta_loss(mapped, g2d).item() == pytest.approx(want, rel=1e-6)


def test_crd_uses_the_batch_and_a_fifo_bank():
    crd = CRDLoss(embed_dim=8, bank_size=5, temperature=0.07).double()
    u1, w1 = unit(3, 8, 1), unit(3, 8, 2)
    assert crd(u1, w1).item() == pytest.approx(infonce_written_out(u1, w1, 0.07), rel=1e-10)  # empty bank
    assert int(crd.filled) == 3 and torch.equal(crd.bank[:3], w1)
    u2, w2 = unit(3, 8, 3), unit(3, 8, 4)
    assert crd(u2, w2).item() == pytest.approx(infonce_written_out(u2, torch.cat([w2, w1]), 0.07), rel=1e-10)
    # 6 rows through a bank of 5: w2's first two rows went to rows 3 and 4, its last wrapped round to row 0
    assert int(crd.filled) == 5 and int(crd.head) == 1
    assert torch.equal(crd.bank, torch.cat([w2[2:], w1[1:], w2[:2]]))
    state = crd.state_dict()
    assert {"bank", "filled", "head"} <= set(state)  # checkpointed with the model


def test_match_points_equals_brute_force_nearest_within_radius():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (400, 3)), rng.uniform(0, 1, (300, 3))
    ia, ib = match_points(torch.from_numpy(a), torch.from_numpy(b), 0.05)
    d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    want_a = np.nonzero(d.min(1) <= 0.05)[0]
    assert ia.tolist() == want_a.tolist() and ib.tolist() == d.argmin(1)[want_a].tolist()
    assert 0 < len(ia) < 400
    pick = sample_matches(len(ia), 10, torch.Generator().manual_seed(0))
    assert len(set(pick.tolist())) == 10 and int(pick.max()) < len(ia)


def test_pointinfonce_is_the_formula():
    fa, fb = unit(6, 4, 5), unit(6, 4, 6)
    assert pointinfonce_loss(fa, fb, 0.07).item() == pytest.approx(infonce_written_out(fa, fb, 0.07), rel=1e-10)
